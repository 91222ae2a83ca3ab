//! Protobuf ↔ domain, by hand, in one place. Parsing validates once and names the field path
//! in every error; after this, only domain types travel.

use api::v1 as pb;
use calendar::{StatutoryTime, Timeliness};
use domain::{
    AgencyCode, ApologyDelivery, ApplicantType, Channel, ComponentCode, DossierId, EventId,
    EventType, FeeKind, Level, NoticeUnit, OnlineServiceLevel, Outcome, PaymentChannel,
    ProcedureCode, ProcedureRules, Profile, Rating, ReturnMethod, SectorCode, SupplementPolicy,
    Text, TransactionId, TransferMode, limits,
};
use tonic::Status;

use crate::status::{field, invalid_field};

/// Joins a field path: `at("profile", "agency_code")` = `profile.agency_code`.
pub fn at(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

pub fn event_id(path: &str, value: &str) -> Result<EventId, Status> {
    field(path, EventId::parse(value))
}

pub fn dossier_id(path: &str, value: &str) -> Result<DossierId, Status> {
    field(path, DossierId::parse(value))
}

pub fn agency(path: &str, value: &str) -> Result<AgencyCode, Status> {
    field(path, AgencyCode::parse(value))
}

pub fn text(path: &str, value: &str) -> Result<Text, Status> {
    field(path, Text::parse(value))
}

pub fn transaction_id(path: &str, value: &str) -> Result<TransactionId, Status> {
    field(path, TransactionId::parse(value))
}

/// A list of component codes: at most [`limits::MAX_COMPONENTS`] (the error names the list),
/// each a valid code (the error names the element, `components[3]`). Emptiness and duplicates
/// are the caller's and the domain's rules.
pub fn components(path: &str, values: &[String]) -> Result<Vec<ComponentCode>, Status> {
    if values.len() > limits::MAX_COMPONENTS {
        return Err(invalid_field(
            path,
            format!(
                "at most {} component codes (got {})",
                limits::MAX_COMPONENTS,
                values.len()
            ),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| field(&format!("{path}[{i}]"), ComponentCode::parse(v.as_str())))
        .collect()
}

/// A required protobuf enum: unknown numbers and `*_UNSPECIFIED` are refused, naming the field.
macro_rules! enum_parser {
    ($fn_name:ident, $pb:ty, $domain:ty, { $($pbv:ident => $dv:expr),+ $(,)? }) => {
        pub fn $fn_name(path: &str, value: i32) -> Result<$domain, Status> {
            match <$pb>::try_from(value) {
                $(Ok(<$pb>::$pbv) => Ok($dv),)+
                _ => Err(invalid_field(path, "is required: choose one of the listed values")),
            }
        }
    };
}

enum_parser!(level, pb::Level, Level, {
    Province => Level::Province, District => Level::District, Commune => Level::Commune,
});
enum_parser!(channel, pb::Channel, Channel, {
    Direct => Channel::Direct, Online => Channel::Online, Postal => Channel::Postal,
});
enum_parser!(applicant_type, pb::ApplicantType, ApplicantType, {
    Citizen => ApplicantType::Citizen, Business => ApplicantType::Business, Organisation => ApplicantType::Organisation,
});
enum_parser!(online_level, pb::OnlineServiceLevel, OnlineServiceLevel, {
    FullOnline => OnlineServiceLevel::FullOnline,
    PartialOnline => OnlineServiceLevel::PartialOnline,
    NotOnline => OnlineServiceLevel::NotOnline,
});
enum_parser!(transfer_mode, pb::TransferMode, TransferMode, {
    Electronic => TransferMode::Electronic, Paper => TransferMode::Paper,
});
enum_parser!(fee_kind, pb::FeeKind, FeeKind, {
    Fee => FeeKind::Fee, Charge => FeeKind::Charge, Tax => FeeKind::Tax,
});
enum_parser!(payment_channel, pb::PaymentChannel, PaymentChannel, {
    NationalPlatform => PaymentChannel::NationalPlatform,
    ProvincialGateway => PaymentChannel::ProvincialGateway,
    Counter => PaymentChannel::Counter,
});
enum_parser!(outcome, pb::Outcome, Outcome, {
    Approved => Outcome::Approved, Refused => Outcome::Refused,
});
enum_parser!(return_method, pb::ReturnMethod, ReturnMethod, {
    Counter => ReturnMethod::Counter, Post => ReturnMethod::Post, Online => ReturnMethod::Online,
});
enum_parser!(rating, pb::Rating, Rating, {
    VerySatisfied => Rating::VerySatisfied, Satisfied => Rating::Satisfied, Unsatisfied => Rating::Unsatisfied,
});
enum_parser!(apology_delivery, pb::ApologyDelivery, ApologyDelivery, {
    PortalAccount => ApologyDelivery::PortalAccount,
    Sms => ApologyDelivery::Sms,
    Email => ApologyDelivery::Email,
    Paper => ApologyDelivery::Paper,
});

/// Free text that may be left empty (not stated): `None`, else checked as [`text`].
pub fn optional_text(path: &str, value: &str) -> Result<Option<Text>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    text(path, value).map(Some)
}

pub fn pb_apology_delivery(v: ApologyDelivery) -> pb::ApologyDelivery {
    match v {
        ApologyDelivery::PortalAccount => pb::ApologyDelivery::PortalAccount,
        ApologyDelivery::Sms => pb::ApologyDelivery::Sms,
        ApologyDelivery::Email => pb::ApologyDelivery::Email,
        ApologyDelivery::Paper => pb::ApologyDelivery::Paper,
    }
}

pub fn pb_notice_unit(v: NoticeUnit) -> pb::NoticeUnit {
    match v {
        NoticeUnit::WorkingDay => pb::NoticeUnit::WorkingDay,
        NoticeUnit::CalendarDay => pb::NoticeUnit::CalendarDay,
    }
}

/// An optional protobuf enum (a query filter): `*_UNSPECIFIED` (0, in every enum of the
/// contract) is `None`; an unknown number is refused, naming the field.
pub fn optional<T>(
    path: &str,
    value: i32,
    parse: impl Fn(&str, i32) -> Result<T, Status>,
) -> Result<Option<T>, Status> {
    if value == 0 {
        return Ok(None);
    }
    parse(path, value)
        .map(Some)
        .map_err(|_| invalid_field(path, "unknown value"))
}

pub fn profile(path: &str, value: Option<&pb::Profile>) -> Result<Profile, Status> {
    let p = value.ok_or_else(|| invalid_field(path, "is required"))?;
    Ok(Profile {
        procedure: field(
            &at(path, "procedure_code"),
            ProcedureCode::parse(p.procedure_code.as_str()),
        )?,
        online_level: online_level(&at(path, "online_level"), p.online_level)?,
        sector: field(
            &at(path, "sector_code"),
            SectorCode::parse(p.sector_code.as_str()),
        )?,
        agency: agency(&at(path, "agency_code"), &p.agency_code)?,
        level: level(&at(path, "level"), p.level)?,
        channel: channel(&at(path, "channel"), p.channel)?,
        applicant_type: applicant_type(&at(path, "applicant_type"), p.applicant_type)?,
    })
}

/// Statutory time: 1 to [`limits::MAX_STATUTORY_DAYS`] working days, or 1 to
/// [`limits::MAX_STATUTORY_HOURS`] working hours.
pub fn statutory_time(
    path: &str,
    value: Option<&pb::StatutoryTime>,
) -> Result<StatutoryTime, Status> {
    use limits::{MAX_STATUTORY_DAYS, MAX_STATUTORY_HOURS};
    use pb::statutory_time::Unit;
    match value.and_then(|v| v.unit) {
        Some(Unit::WorkingDays(d)) if (1..=MAX_STATUTORY_DAYS).contains(&d) => {
            Ok(StatutoryTime::Days(d))
        }
        Some(Unit::WorkingDays(_)) => Err(invalid_field(
            &at(path, "working_days"),
            format!("must be 1 to {MAX_STATUTORY_DAYS}"),
        )),
        Some(Unit::WorkingHours(h)) if (1..=MAX_STATUTORY_HOURS).contains(&h) => {
            Ok(StatutoryTime::Hours(h))
        }
        Some(Unit::WorkingHours(_)) => Err(invalid_field(
            &at(path, "working_hours"),
            format!("must be 1 to {MAX_STATUTORY_HOURS}"),
        )),
        None => Err(invalid_field(
            path,
            "is required: working_days or working_hours",
        )),
    }
}

/// Amounts in VND: positive whole numbers, at most [`limits::MAX_AMOUNT_VND`].
pub fn amount_vnd(path: &str, value: i64) -> Result<i64, Status> {
    if (1..=limits::MAX_AMOUNT_VND).contains(&value) {
        Ok(value)
    } else {
        Err(invalid_field(
            path,
            format!(
                "must be a positive whole number of VND, at most {}",
                limits::MAX_AMOUNT_VND
            ),
        ))
    }
}

// Domain → protobuf, for answers and replay.

pub fn pb_level(v: Level) -> pb::Level {
    match v {
        Level::Province => pb::Level::Province,
        Level::District => pb::Level::District,
        Level::Commune => pb::Level::Commune,
    }
}

pub fn pb_channel(v: Channel) -> pb::Channel {
    match v {
        Channel::Online => pb::Channel::Online,
        Channel::Direct => pb::Channel::Direct,
        Channel::Postal => pb::Channel::Postal,
    }
}

pub fn pb_applicant_type(v: ApplicantType) -> pb::ApplicantType {
    match v {
        ApplicantType::Citizen => pb::ApplicantType::Citizen,
        ApplicantType::Business => pb::ApplicantType::Business,
        ApplicantType::Organisation => pb::ApplicantType::Organisation,
    }
}

pub fn pb_online_level(v: OnlineServiceLevel) -> pb::OnlineServiceLevel {
    match v {
        OnlineServiceLevel::FullOnline => pb::OnlineServiceLevel::FullOnline,
        OnlineServiceLevel::PartialOnline => pb::OnlineServiceLevel::PartialOnline,
        OnlineServiceLevel::NotOnline => pb::OnlineServiceLevel::NotOnline,
    }
}

/// The wire form of a profile (the inverse of [`profile`]).
pub fn pb_profile(p: &Profile) -> pb::Profile {
    pb::Profile {
        procedure_code: p.procedure.as_str().to_owned(),
        online_level: pb_online_level(p.online_level) as i32,
        sector_code: p.sector.as_str().to_owned(),
        agency_code: p.agency.as_str().to_owned(),
        level: pb_level(p.level) as i32,
        channel: pb_channel(p.channel) as i32,
        applicant_type: pb_applicant_type(p.applicant_type) as i32,
    }
}

pub fn pb_timeliness(v: Timeliness) -> pb::Timeliness {
    match v {
        Timeliness::Early => pb::Timeliness::Early,
        Timeliness::OnTime => pb::Timeliness::OnTime,
        Timeliness::Late => pb::Timeliness::Late,
    }
}

/// The kind of event a proto `Event.body` carries. Exhaustive: a body added to the proto does
/// not compile until it has an [`EventType`]; the test `event_types_are_the_proto_bodies`
/// checks the other way round, and that the oneof's field names are the types' names.
pub fn body_type(body: &pb::event::Body) -> EventType {
    use pb::event::Body;
    match body {
        Body::Received(_) => EventType::Received,
        Body::ComponentsDigitized(_) => EventType::ComponentsDigitized,
        Body::RefusedAtIntake(_) => EventType::RefusedAtIntake,
        Body::Transferred(_) => EventType::Transferred,
        Body::SupplementRequested(_) => EventType::SupplementRequested,
        Body::SupplementReceived(_) => EventType::SupplementReceived,
        Body::Late(_) => EventType::Late,
        Body::ApologyIssued(_) => EventType::ApologyIssued,
        Body::FeeAssessed(_) => EventType::FeeAssessed,
        Body::Paid(_) => EventType::Paid,
        Body::Resolved(_) => EventType::Resolved,
        Body::Withdrawn(_) => EventType::Withdrawn,
        Body::Stopped(_) => EventType::Stopped,
        Body::ResultDigitized(_) => EventType::ResultDigitized,
        Body::ResultReturned(_) => EventType::ResultReturned,
        Body::SatisfactionRated(_) => EventType::SatisfactionRated,
        Body::LateWithdrawn(_) => EventType::LateWithdrawn,
        Body::FinancialObligationRequested(_) => EventType::FinancialObligationRequested,
        Body::FinancialObligationFulfilled(_) => EventType::FinancialObligationFulfilled,
    }
}

enum_parser!(supplement_policy, pb::SupplementPolicy, SupplementPolicy, {
    Restart => SupplementPolicy::Restart, Extend => SupplementPolicy::Extend,
});

pub fn pb_supplement_policy(v: SupplementPolicy) -> pb::SupplementPolicy {
    match v {
        SupplementPolicy::Restart => pb::SupplementPolicy::Restart,
        SupplementPolicy::Extend => pb::SupplementPolicy::Extend,
    }
}

pub fn pb_statutory_time(t: StatutoryTime) -> pb::StatutoryTime {
    use pb::statutory_time::Unit;
    pb::StatutoryTime {
        unit: Some(match t {
            StatutoryTime::Days(d) => Unit::WorkingDays(d),
            StatutoryTime::Hours(h) => Unit::WorkingHours(h),
        }),
    }
}

/// A cut-off hour as the API writes it (`HH:MM`, local time).
pub fn cutoff_text(t: Option<chrono::NaiveTime>) -> String {
    t.map(|t| t.format("%H:%M").to_string()).unwrap_or_default()
}

/// The rules a dossier was received under, as the API shows them.
pub fn pb_procedure_rules(r: &ProcedureRules) -> pb::ProcedureRules {
    pb::ProcedureRules {
        catalogue_version: r.catalogue_version,
        supplement_policy: pb_supplement_policy(r.supplement_policy) as i32,
        max_supplement_requests: r.max_supplement_requests,
        close_after_working_days: r.close_after_working_days,
        same_day_cutoff: cutoff_text(r.same_day_cutoff),
        obligation_pauses_clock: r.obligation_pauses_clock,
    }
}

/// The request's applicant, validated for a dossier of `applicant_type` (`None` when absent).
/// Errors name the field and never repeat the value.
pub fn applicant(
    path: &str,
    value: Option<&pb::Applicant>,
    applicant_type: ApplicantType,
) -> Result<Option<personal::Applicant>, Status> {
    let Some(a) = value else {
        return Ok(None);
    };
    let doc_path = at(path, "document");
    let owner_document = document(&doc_path, a.document.as_ref())?
        .ok_or_else(|| invalid_field(&doc_path, "is required"))?;
    let representative = match &a.representative {
        None => None,
        Some(r) => Some(personal::RepresentativeInput {
            name: &r.name,
            document: document(
                &at(&at(path, "representative"), "document"),
                r.document.as_ref(),
            )?,
            phone: &r.phone,
        }),
    };
    let input = personal::ApplicantInput {
        owner_name: &a.owner_name,
        document: owner_document,
        phone: &a.phone,
        email: &a.email,
        address: &a.address,
        representative,
    };
    personal::Applicant::parse(path, &input, applicant_type)
        .map(Some)
        .map_err(|e| invalid_field(&e.field, e.reason))
}

fn document<'a>(
    path: &str,
    value: Option<&'a pb::IdentityDocument>,
) -> Result<Option<personal::DocumentInput<'a>>, Status> {
    let Some(d) = value else {
        return Ok(None);
    };
    let kind = optional(&at(path, "kind"), d.kind, |path, k| {
        use personal::DocumentKind as K;
        match pb::DocumentKind::try_from(k) {
            Ok(pb::DocumentKind::Cccd) => Ok(K::Cccd),
            Ok(pb::DocumentKind::Cmnd) => Ok(K::Cmnd),
            Ok(pb::DocumentKind::Passport) => Ok(K::Passport),
            Ok(pb::DocumentKind::TaxCode) => Ok(K::TaxCode),
            Ok(pb::DocumentKind::Other) => Ok(K::Other),
            Ok(pb::DocumentKind::Unspecified) | Err(_) => Err(invalid_field(path, "unknown value")),
        }
    })?;
    Ok(Some(personal::DocumentInput {
        kind,
        number: &d.number,
    }))
}

pub fn pb_return_method(v: ReturnMethod) -> pb::ReturnMethod {
    match v {
        ReturnMethod::Counter => pb::ReturnMethod::Counter,
        ReturnMethod::Post => pb::ReturnMethod::Post,
        ReturnMethod::Online => pb::ReturnMethod::Online,
    }
}

/// The applicant as the contract shows it.
pub fn pb_applicant(a: &personal::Applicant) -> pb::Applicant {
    let doc = |d: &personal::IdentityDocument| pb::IdentityDocument {
        kind: match d.kind {
            personal::DocumentKind::Cccd => pb::DocumentKind::Cccd,
            personal::DocumentKind::Cmnd => pb::DocumentKind::Cmnd,
            personal::DocumentKind::Passport => pb::DocumentKind::Passport,
            personal::DocumentKind::TaxCode => pb::DocumentKind::TaxCode,
            personal::DocumentKind::Other => pb::DocumentKind::Other,
        } as i32,
        number: d.number.clone(),
    };
    pb::Applicant {
        owner_name: a.owner_name.clone(),
        document: Some(doc(&a.document)),
        phone: a.phone.clone().unwrap_or_default(),
        email: a.email.clone().unwrap_or_default(),
        address: a.address.clone().unwrap_or_default(),
        representative: a.representative.as_ref().map(|r| pb::Representative {
            name: r.name.clone(),
            document: r.document.as_ref().map(doc),
            phone: r.phone.clone().unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn violation(s: Status) -> String {
        s.get_details_bad_request().unwrap().field_violations[0]
            .field
            .clone()
    }

    #[test]
    fn profile_errors_name_the_nested_field() {
        let mut p = pb::Profile {
            procedure_code: "1.001".into(),
            online_level: pb::OnlineServiceLevel::FullOnline as i32,
            sector_code: "land".into(),
            agency_code: "000.00.12.H40".into(),
            level: pb::Level::District as i32,
            channel: pb::Channel::Online as i32,
            applicant_type: pb::ApplicantType::Citizen as i32,
        };
        assert!(profile("profile", Some(&p)).is_ok());
        p.level = 0;
        assert_eq!(
            violation(profile("profile", Some(&p)).unwrap_err()),
            "profile.level"
        );
        p.level = 99;
        assert_eq!(
            violation(profile("profile", Some(&p)).unwrap_err()),
            "profile.level"
        );
        p.level = 1;
        p.agency_code = "bad_code".into();
        assert_eq!(
            violation(profile("profile", Some(&p)).unwrap_err()),
            "profile.agency_code"
        );
        assert_eq!(violation(profile("profile", None).unwrap_err()), "profile");
        assert_eq!(optional("f", 0, level).unwrap(), None);
        assert_eq!(optional("f", 2, level).unwrap(), Some(Level::District));
        assert_eq!(violation(optional("f", 42, level).unwrap_err()), "f");
        p.agency_code = "000.00.12.H40".into();
        assert_eq!(pb_profile(&profile("profile", Some(&p)).unwrap()), p);
    }

    #[test]
    fn statutory_time_bounds() {
        use pb::statutory_time::Unit;
        let st = |u| pb::StatutoryTime { unit: Some(u) };
        assert_eq!(
            statutory_time("s", Some(&st(Unit::WorkingDays(15)))).unwrap(),
            StatutoryTime::Days(15)
        );
        assert_eq!(
            violation(statutory_time("s", Some(&st(Unit::WorkingDays(0)))).unwrap_err()),
            "s.working_days"
        );
        assert_eq!(violation(statutory_time("s", None).unwrap_err()), "s");
        assert_eq!(
            violation(components("c", &["ok".into(), "".into()]).unwrap_err()),
            "c[1]"
        );
    }

    #[test]
    fn event_types_are_the_proto_bodies() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(api::FILE_DESCRIPTOR_SET).unwrap();
        let event = set
            .file
            .iter()
            .filter(|f| f.package() == "dossier.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Event")
            .expect("dossier.v1.Event");
        let body = event
            .oneof_decl
            .iter()
            .position(|o| o.name() == "body")
            .expect("Event.body");
        let bodies: Vec<&str> = event
            .field
            .iter()
            .filter(|f| f.oneof_index == i32::try_from(body).ok())
            .map(|f| f.name())
            .collect();
        let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(bodies, types, "Event.body and EventType::ALL, in order");
    }
}
