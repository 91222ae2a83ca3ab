//! The national portal's message shapes, in ONE place: what is sent for a dossier
//! (`DongBoHoSoMC`) and for its progress (`CapNhatTienDoHoSoMC`), built from the dossier's events
//! by pure functions. An operator who must adjust a field name, a code or a text changes this
//! module only. No official specification is public; these are the shapes two independent
//! provincial systems use (DOMAIN.md "National portal synchronisation").
//!
//! # Envelope
//!
//! Every request is `POST {portal.endpoint}` with `Content-Type: application/json`,
//! `Authorization: Bearer <portal credentials>` and the body [`Envelope`]
//! `{"service": "DongBoHoSoMC" | "CapNhatTienDoHoSoMC", "data": [...]}`: one dossier record per
//! `DongBoHoSoMC` request, at most [`PROGRESS_CHUNK`] (10) progress entries per
//! `CapNhatTienDoHoSoMC` request. The answer is [`Answer`] `{"error_code": 0, "message": ...}`;
//! only `error_code` 0 is a success.
//!
//! # Mapping table
//!
//! Dates are `yyyyMMddHHmmss` in Asia/Ho_Chi_Minh (UTC+7, [`portal_date`]); flags are the
//! numbers 0 / 1. `?` marks a field sent only when known.
//!
//! | field | from |
//! |---|---|
//! | `MaHoSo` | the dossier id |
//! | `MaTTHC` | the procedure code |
//! | `TenTTHC` | the procedure's name in the catalogue version the dossier was received under (the `received` event names it; so a later catalogue change never renames a sent dossier); the code for a dossier received outside the catalogue |
//! | `MaLinhVuc`, `TenLinhVuc` | the sector code (the catalogue holds no sector names: both carry the code) |
//! | `KenhThucHien` | channel: direct 1, online 2, postal 3 |
//! | `ChuHoSo`?, `SoGiayToChuHoSo`?, `Email`?, `SoDienThoai`?, `DinhDanhCHS` | the applicant ([`crate::applicant`]); absent (and `DinhDanhCHS` empty) while unknown or erased |
//! | `LoaiDoiTuong` | applicant type: citizen 1, business 2, organisation 4 ("other organisation"; the events do not tell state agencies, 3, apart) |
//! | `TrichYeuHoSo` | `"Hồ sơ " + procedure code` |
//! | `NgayTiepNhan` | reception (or refusal at the counter) time |
//! | `NgayHenTra`? | the due time in force (moved only by a received supplement; never by the apology) |
//! | `TrangThaiHoSo` | `Dossier::portal_status` (1–10; the table in `crates/domain/src/dossier.rs`) |
//! | `NgayTra`? | when the result was returned |
//! | `HinhThuc`? | how the result was returned: counter 1, post 2, online 3 |
//! | `NgayKetThucXuLy`? | resolution, withdrawal, stop or refusal time |
//! | `DonViXuLy` | the agency holding the dossier (the receiving one, then each transfer's target) |
//! | `TaiLieuNop[]` | per submitted component: `MaThanhPhanHoSo`, `DuocSoHoa` (digitized or reused), `DuocTaiSuDung` (reused), `DuocLayTuKhoDMQG` (reused: taken from a national database) |
//! | `DanhSachLePhi[]` | per assessed fee: `TenPhiLePhi` (Phí / Lệ phí / Thuế), `MaPhiLePhi` (`fee`, `charge`, `tax`), `HinhThucThu` (the dossier's last payment: national platform 1, provincial gateway 2, counter 3; 0 not paid), `Gia` (VND) |
//! | `DanhSachHoSoBoSung[]` | per supplement request: `NgayYeuCauBoSung`, `NoiDungBoSung` (the request's reason), `NgayTiepNhanBoSung`? (when received), `NgayHenTraTruoc` (due time before), `NgayHenTraMoi`? (due time after receipt) |
//! | `DanhSachGiayToKetQua[]` | per digitized result: `TenGiayTo` (document reference), `MaBamSHA256` (its SHA-256) |
//! | `DuocThanhToanTrucTuyen` | 1 when a payment went through an online channel |
//!
//! Progress, one entry per event (`CapNhatTienDoHoSoMC`):
//!
//! | field | from |
//! |---|---|
//! | `MaHoSo` | the dossier id |
//! | `NguoiXuLy`, `PhongBanXuLy` | the agency holding the dossier after the event (the events name no officer) |
//! | `ChucDanh` | `"Cán bộ xử lý"` (likewise) |
//! | `ThoiDiemXuLy` | the event's business time |
//! | `NoiDungXuLy` | a fixed Vietnamese text per event type ([`progress_text`]; free-text reasons are not sent) |
//! | `TrangThai` | the portal status after the event |
//! | `NgayBatDau` | the previous event's business time (the step's start; the event's own for the first) |
//! | `NgayKetThucTheoQuyDinh`? | the due time in force after the event |

use chrono::{DateTime, Utc};
use domain::{
    ApplicantType, Channel, Dossier, DossierEvent, Event, FeeKind, Outcome, PaymentChannel,
    ReturnMethod,
};
use serde::{Deserialize, Serialize};

use crate::applicant::ApplicantFields;

/// The service name of a dossier record.
pub const DOSSIER_SERVICE: &str = "DongBoHoSoMC";
/// The service name of progress entries.
pub const PROGRESS_SERVICE: &str = "CapNhatTienDoHoSoMC";
/// Progress entries per request.
pub const PROGRESS_CHUNK: usize = 10;

/// A request body.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a, T> {
    pub service: &'static str,
    pub data: &'a [T],
}

/// The portal's answer; `error_code` 0 is the only success.
#[derive(Debug, Clone, Deserialize)]
pub struct Answer {
    pub error_code: i64,
    #[serde(default)]
    pub message: Option<String>,
}

/// One dossier (`DongBoHoSoMC`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DossierRecord {
    pub ma_ho_so: String,
    #[serde(rename = "MaTTHC")]
    pub ma_tthc: String,
    #[serde(rename = "TenTTHC")]
    pub ten_tthc: String,
    pub ma_linh_vuc: String,
    pub ten_linh_vuc: String,
    pub kenh_thuc_hien: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chu_ho_so: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub so_giay_to_chu_ho_so: Option<String>,
    pub loai_doi_tuong: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub so_dien_thoai: Option<String>,
    pub trich_yeu_ho_so: String,
    pub ngay_tiep_nhan: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngay_hen_tra: Option<String>,
    pub trang_thai_ho_so: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngay_tra: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hinh_thuc: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngay_ket_thuc_xu_ly: Option<String>,
    pub don_vi_xu_ly: String,
    pub tai_lieu_nop: Vec<Component>,
    pub danh_sach_le_phi: Vec<Fee>,
    pub danh_sach_ho_so_bo_sung: Vec<Supplement>,
    pub danh_sach_giay_to_ket_qua: Vec<ResultDocument>,
    pub duoc_thanh_toan_truc_tuyen: u8,
    #[serde(rename = "DinhDanhCHS")]
    pub dinh_danh_chs: Vec<Identity>,
}

/// A submitted component (`TaiLieuNop[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    pub ma_thanh_phan_ho_so: String,
    pub duoc_so_hoa: u8,
    pub duoc_tai_su_dung: u8,
    #[serde(rename = "DuocLayTuKhoDMQG")]
    pub duoc_lay_tu_kho_dmqg: u8,
}

/// An assessed fee (`DanhSachLePhi[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Fee {
    pub ten_phi_le_phi: String,
    pub ma_phi_le_phi: String,
    pub hinh_thuc_thu: u8,
    pub gia: i64,
}

/// A supplement request (`DanhSachHoSoBoSung[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Supplement {
    pub ngay_yeu_cau_bo_sung: String,
    pub noi_dung_bo_sung: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngay_tiep_nhan_bo_sung: Option<String>,
    pub ngay_hen_tra_truoc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngay_hen_tra_moi: Option<String>,
}

/// A digitized result (`DanhSachGiayToKetQua[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultDocument {
    pub ten_giay_to: String,
    #[serde(rename = "MaBamSHA256")]
    pub ma_bam_sha256: String,
}

/// An identity document of the applicant (`DinhDanhCHS[]`): `LoaiDinhDanh` 1 CCCD, 2 CMND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Identity {
    pub loai_dinh_danh: u8,
    pub so_dinh_danh: String,
}

/// One progress entry (`CapNhatTienDoHoSoMC`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProgressEntry {
    pub ma_ho_so: String,
    pub nguoi_xu_ly: String,
    pub chuc_danh: String,
    pub thoi_diem_xu_ly: String,
    pub phong_ban_xu_ly: String,
    pub noi_dung_xu_ly: String,
    pub trang_thai: u8,
    pub ngay_bat_dau: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngay_ket_thuc_theo_quy_dinh: Option<String>,
}

/// Why a dossier cannot be put in the portal's shape (its version is then recorded as refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("the dossier has no reception or refusal event")]
    NotReceived,
}

/// `yyyyMMddHHmmss` in Asia/Ho_Chi_Minh.
pub fn portal_date(t: DateTime<Utc>) -> String {
    calendar::local(t).format("%Y%m%d%H%M%S").to_string()
}

/// The channel code (`KenhThucHien`).
pub fn channel_code(channel: Channel) -> u8 {
    channel.national_code()
}

/// The applicant-type code (`LoaiDoiTuong`).
pub fn applicant_type_code(t: ApplicantType) -> u8 {
    match t {
        ApplicantType::Citizen => 1,
        ApplicantType::Business => 2,
        ApplicantType::Organisation => 4,
    }
}

/// How the result was returned (`HinhThuc`).
pub fn return_method_code(m: ReturnMethod) -> u8 {
    match m {
        ReturnMethod::Counter => 1,
        ReturnMethod::Post => 2,
        ReturnMethod::Online => 3,
    }
}

/// How a fee was collected (`HinhThucThu`).
pub fn payment_code(channel: Option<PaymentChannel>) -> u8 {
    match channel {
        None => 0,
        Some(PaymentChannel::NationalPlatform) => 1,
        Some(PaymentChannel::ProvincialGateway) => 2,
        Some(PaymentChannel::Counter) => 3,
    }
}

fn fee_names(kind: FeeKind) -> (&'static str, &'static str) {
    match kind {
        FeeKind::Fee => ("Phí", "fee"),
        FeeKind::Charge => ("Lệ phí", "charge"),
        FeeKind::Tax => ("Thuế", "tax"),
    }
}

/// `NoiDungXuLy`: a fixed text per event (no free text: reasons may name people).
pub fn progress_text(event: &DossierEvent) -> String {
    match event {
        DossierEvent::Received { .. } => "Tiếp nhận hồ sơ".to_owned(),
        DossierEvent::ComponentsDigitized { .. } => "Số hóa thành phần hồ sơ".to_owned(),
        DossierEvent::RefusedAtIntake { .. } => "Từ chối tiếp nhận hồ sơ".to_owned(),
        DossierEvent::Transferred { to_agency, .. } => {
            format!("Chuyển xử lý đến {}", to_agency.as_str())
        }
        DossierEvent::SupplementRequested { .. } => "Yêu cầu bổ sung, hoàn thiện hồ sơ".to_owned(),
        DossierEvent::SupplementReceived { .. } => "Tiếp nhận hồ sơ bổ sung".to_owned(),
        DossierEvent::Late { .. } => "Hồ sơ quá hạn giải quyết".to_owned(),
        DossierEvent::ApologyIssued {
            new_appointment, ..
        } => format!(
            "Xin lỗi và hẹn lại ngày trả kết quả: {}",
            portal_date(*new_appointment)
        ),
        DossierEvent::FeeAssessed { .. } => "Thông báo nghĩa vụ tài chính".to_owned(),
        DossierEvent::Paid { .. } => "Thực hiện nghĩa vụ tài chính".to_owned(),
        DossierEvent::Resolved { outcome, .. } => match outcome {
            Outcome::Approved => "Giải quyết hồ sơ: chấp thuận".to_owned(),
            Outcome::Refused => "Giải quyết hồ sơ: từ chối".to_owned(),
        },
        DossierEvent::Withdrawn { .. } => "Rút hồ sơ theo yêu cầu của người nộp".to_owned(),
        DossierEvent::Stopped { .. } => "Dừng xử lý hồ sơ".to_owned(),
        DossierEvent::ResultDigitized { .. } => "Số hóa kết quả giải quyết".to_owned(),
        DossierEvent::ResultReturned { .. } => "Trả kết quả".to_owned(),
        DossierEvent::SatisfactionRated { .. } => "Đánh giá mức độ hài lòng".to_owned(),
        DossierEvent::FinancialObligationRequested { .. } => {
            "Yêu cầu thực hiện nghĩa vụ tài chính".to_owned()
        }
        DossierEvent::FinancialObligationFulfilled { .. } => {
            "Hoàn thành nghĩa vụ tài chính".to_owned()
        }
        // The resolution of a counter that was offline, dated before the due time, arrived
        // after the watcher's late mark: the mark is cancelled.
        DossierEvent::LateWithdrawn { timeliness, .. } => match timeliness {
            calendar::Timeliness::Early => "Hủy ghi nhận quá hạn: hồ sơ đã giải quyết trước hạn",
            calendar::Timeliness::OnTime | calendar::Timeliness::Late => {
                "Hủy ghi nhận quá hạn: hồ sơ đã giải quyết đúng hạn"
            }
        }
        .to_owned(),
    }
}

/// The catalogue version a dossier was received under, if it was (its name is `TenTTHC`).
pub fn catalogue_version(events: &[Event]) -> Option<u64> {
    events.iter().find_map(|e| match &e.body {
        DossierEvent::Received {
            procedure: Some(rules),
            ..
        } => Some(rules.catalogue_version),
        _ => None,
    })
}

/// The dossier record after all of `events` (oldest first); `procedure_name` is the name in
/// the catalogue version of [`catalogue_version`] (`None`: the code stands for it).
pub fn dossier_record(
    dossier_id: &str,
    events: &[Event],
    applicant: &ApplicantFields,
    procedure_name: Option<&str>,
) -> Result<DossierRecord, ShapeError> {
    let dossier = Dossier::from_events(events);
    let profile = dossier.profile.as_ref().ok_or(ShapeError::NotReceived)?;
    let status = dossier.portal_status().ok_or(ShapeError::NotReceived)?;
    let received_at = dossier
        .received_at
        .or(dossier.ended_at)
        .ok_or(ShapeError::NotReceived)?;
    let mut fees = Vec::new();
    let mut supplements: Vec<Supplement> = Vec::new();
    let mut results = Vec::new();
    let mut last_payment = None;
    let mut due_in_force = None;
    for event in events {
        match &event.body {
            DossierEvent::Received { due_at, .. }
            | DossierEvent::FinancialObligationFulfilled { due_at, .. } => {
                due_in_force = Some(*due_at);
            }
            DossierEvent::FeeAssessed { amount_vnd, kind } => fees.push((*kind, *amount_vnd)),
            DossierEvent::Paid { channel, .. } => last_payment = Some(*channel),
            DossierEvent::SupplementRequested { reason, .. } => supplements.push(Supplement {
                ngay_yeu_cau_bo_sung: portal_date(event.occurred_at),
                noi_dung_bo_sung: reason.as_str().to_owned(),
                ngay_tiep_nhan_bo_sung: None,
                ngay_hen_tra_truoc: due_in_force.map(portal_date).unwrap_or_default(),
                ngay_hen_tra_moi: None,
            }),
            DossierEvent::SupplementReceived { due_at, .. } => {
                due_in_force = Some(*due_at);
                if let Some(open) = supplements
                    .iter_mut()
                    .rev()
                    .find(|s| s.ngay_tiep_nhan_bo_sung.is_none())
                {
                    open.ngay_tiep_nhan_bo_sung = Some(portal_date(event.occurred_at));
                    open.ngay_hen_tra_moi = Some(portal_date(*due_at));
                }
            }
            DossierEvent::ResultDigitized {
                document_ref,
                sha256,
            } => results.push(ResultDocument {
                ten_giay_to: document_ref.as_str().to_owned(),
                ma_bam_sha256: sha256.clone(),
            }),
            _ => {}
        }
    }
    let ended = dossier
        .resolution
        .as_ref()
        .map(|r| r.at)
        .or(dossier.ended_at);
    Ok(DossierRecord {
        ma_ho_so: dossier_id.to_owned(),
        ma_tthc: profile.procedure.as_str().to_owned(),
        ten_tthc: procedure_name
            .unwrap_or(profile.procedure.as_str())
            .to_owned(),
        ma_linh_vuc: profile.sector.as_str().to_owned(),
        ten_linh_vuc: profile.sector.as_str().to_owned(),
        kenh_thuc_hien: channel_code(profile.channel),
        chu_ho_so: applicant.owner_name.clone(),
        so_giay_to_chu_ho_so: applicant.document_number.clone(),
        loai_doi_tuong: applicant_type_code(profile.applicant_type),
        email: applicant.email.clone(),
        so_dien_thoai: applicant.phone.clone(),
        trich_yeu_ho_so: format!("Hồ sơ {}", profile.procedure.as_str()),
        ngay_tiep_nhan: portal_date(received_at),
        ngay_hen_tra: dossier.due_at.map(portal_date),
        trang_thai_ho_so: status,
        ngay_tra: dossier.returned_at.map(portal_date),
        hinh_thuc: dossier.return_method.map(return_method_code),
        ngay_ket_thuc_xu_ly: ended.map(portal_date),
        don_vi_xu_ly: dossier
            .current_agency
            .as_ref()
            .unwrap_or(&profile.agency)
            .as_str()
            .to_owned(),
        tai_lieu_nop: dossier
            .components
            .iter()
            .map(|c| {
                let reused = dossier.reused.contains(c);
                let digitized = reused || dossier.digitized.contains(c);
                Component {
                    ma_thanh_phan_ho_so: c.as_str().to_owned(),
                    duoc_so_hoa: u8::from(digitized),
                    duoc_tai_su_dung: u8::from(reused),
                    duoc_lay_tu_kho_dmqg: u8::from(reused),
                }
            })
            .collect(),
        danh_sach_le_phi: fees
            .into_iter()
            .map(|(kind, amount)| {
                let (name, code) = fee_names(kind);
                Fee {
                    ten_phi_le_phi: name.to_owned(),
                    ma_phi_le_phi: code.to_owned(),
                    hinh_thuc_thu: payment_code(last_payment),
                    gia: amount,
                }
            })
            .collect(),
        danh_sach_ho_so_bo_sung: supplements,
        danh_sach_giay_to_ket_qua: results,
        duoc_thanh_toan_truc_tuyen: u8::from(dossier.paid_online),
        dinh_danh_chs: applicant.identities.clone(),
    })
}

/// The progress entries of the events after version `after` (the first event is version 1),
/// each paired with its version, oldest first.
pub fn progress_entries(
    dossier_id: &str,
    events: &[Event],
    after: u32,
) -> Vec<(u32, ProgressEntry)> {
    let mut dossier = Dossier::default();
    let mut previous_at = None;
    let mut entries = Vec::new();
    for event in events {
        dossier.evolve(event);
        let start = previous_at.unwrap_or(event.occurred_at);
        previous_at = Some(event.occurred_at);
        if dossier.version <= after {
            continue;
        }
        let agency = dossier
            .current_agency
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        entries.push((
            dossier.version,
            ProgressEntry {
                ma_ho_so: dossier_id.to_owned(),
                nguoi_xu_ly: agency.clone(),
                chuc_danh: "Cán bộ xử lý".to_owned(),
                thoi_diem_xu_ly: portal_date(event.occurred_at),
                phong_ban_xu_ly: agency,
                noi_dung_xu_ly: progress_text(&event.body),
                trang_thai: dossier.portal_status().unwrap_or(2),
                ngay_bat_dau: portal_date(start),
                ngay_ket_thuc_theo_quy_dinh: dossier.due_at.map(portal_date),
            },
        ));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dates_are_local_to_ho_chi_minh_city() {
        let t = Utc.with_ymd_and_hms(2025, 12, 31, 17, 30, 5).unwrap();
        assert_eq!(portal_date(t), "20260101003005");
    }

    #[test]
    fn codes_follow_the_mapping_table() {
        assert_eq!(channel_code(Channel::Direct), 1);
        assert_eq!(channel_code(Channel::Online), 2);
        assert_eq!(channel_code(Channel::Postal), 3);
        assert_eq!(applicant_type_code(ApplicantType::Citizen), 1);
        assert_eq!(applicant_type_code(ApplicantType::Business), 2);
        assert_eq!(applicant_type_code(ApplicantType::Organisation), 4);
        assert_eq!(payment_code(None), 0);
        assert_eq!(payment_code(Some(PaymentChannel::Counter)), 3);
    }
}
