//! The dossier: its vocabulary, its lifecycle rules, and the fold over its events.
//!
//! `decide(&Dossier, &Command, Rules) -> Result<Decision, Refusal>` holds every rule of
//! `shared/DOMAIN.md`; `Dossier::evolve(&Event)` applies an event and holds none. The working-time
//! arithmetic lives in the `calendar` crate and is passed in through [`Rules`].
//!
//! This crate does no I/O: no tokio, sqlx, tonic or NATS. Everything here is a pure function of
//! its arguments, so its tests are instant and exhaustive.

pub mod apology;
pub mod command;
pub mod decide;
pub mod dossier;
pub mod event;
pub mod ids;
pub mod limits;
pub mod procedure;
pub mod refusal;

pub use apology::{APOLOGY_NOTICE_DAYS, WarningHorizon, apology_deadline, apology_on_time};
pub use command::{Action, Command, Rules, SupplementPolicy};
pub use decide::{Decision, MAX_AMOUNT_VND, decide, event_time};
pub use dossier::{Apology, Dossier, PaymentRecord, Phase, Resolution};
pub use event::{
    ApologyDelivery, ApplicantType, Channel, DecodeError, DossierEvent, Event, EventType, FeeKind,
    Level, NoticeUnit, OnlineServiceLevel, Outcome, PaymentChannel, Profile, Rating, ReturnMethod,
    SealedApplicant, StopCause, TransferMode, UnknownEventType,
};
pub use ids::{
    AgencyCode, ComponentCode, DossierId, EventId, FieldError, ProcedureCode, SectorCode, Text,
    TransactionId,
};
pub use procedure::{ProcedureRules, same_day_due};
pub use refusal::{Refusal, RefusalKind};
