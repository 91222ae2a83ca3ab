//! Creating and updating the stream.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::{self, ErrorCode};

use crate::{RelayConfig, RelayError};

/// The stream configuration the relay wants: subjects `{prefix}.>`, file storage, `replicas`,
/// the `Nats-Msg-Id` duplicate window, limits retention with no limit set (the stream is the
/// complete published history), discard old, direct get allowed (NATS ≥ 2.9), and message
/// deletes and purges denied: the relay reads its position from the stream's last message, so
/// messages must not vanish from under it.
///
/// Operators may add limits the relay does not manage (they are kept on update), but none that
/// can empty the stream, such as `max_age`: the relay reads an empty stream as "nothing
/// published yet" and republishes the whole log into it. `max_msgs` or `max_bytes` with discard
/// old are fine (they drop the oldest messages; the last one stays).
pub fn stream_config(cfg: &RelayConfig) -> Config {
    Config {
        name: cfg.stream.clone(),
        description: Some(format!(
            "Dossier events relayed from the event log, subjects {}.>",
            cfg.subject_prefix
        )),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: cfg.duplicate_window,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        allow_direct: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// Whether `current` already has every setting the relay manages, as in `wanted`. Settings the
/// relay does not manage (limits, description, metadata…) may have been set by an operator and
/// are left as they are.
fn has_managed_settings(current: &Config, wanted: &Config) -> bool {
    let mut current_subjects = current.subjects.clone();
    current_subjects.sort();
    let mut wanted_subjects = wanted.subjects.clone();
    wanted_subjects.sort();
    current_subjects == wanted_subjects
        && current.storage == wanted.storage
        && current.num_replicas == wanted.num_replicas
        && current.duplicate_window == wanted.duplicate_window
        && current.retention == wanted.retention
        && current.discard == wanted.discard
        && current.allow_direct == wanted.allow_direct
        && current.deny_delete == wanted.deny_delete
        && current.deny_purge == wanted.deny_purge
}

fn with_managed_settings(mut current: Config, wanted: &Config) -> Config {
    current.subjects = wanted.subjects.clone();
    current.storage = wanted.storage;
    current.num_replicas = wanted.num_replicas;
    current.duplicate_window = wanted.duplicate_window;
    current.retention = wanted.retention;
    current.discard = wanted.discard;
    current.allow_direct = wanted.allow_direct;
    current.deny_delete = wanted.deny_delete;
    current.deny_purge = wanted.deny_purge;
    current
}

/// Creates the stream, or updates it if a managed setting differs (see [`stream_config`]), and
/// returns it.
///
/// Idempotent: when the stream already has the wanted settings, the only request is one stream
/// info. Safe when several relays call it at once (creating with the same configuration twice
/// is accepted by the server; a lost race is retried through the update path).
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &RelayConfig,
) -> Result<Stream, RelayError> {
    cfg.validate()?;
    let wanted = stream_config(cfg);
    let setup_error = |source| RelayError::StreamSetup {
        stream: cfg.stream.clone(),
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        match js.get_stream(&cfg.stream).await {
            Ok(stream) => {
                let current = &stream.cached_info().config;
                if has_managed_settings(current, &wanted) {
                    return Ok(stream);
                }
                let update = with_managed_settings(current.clone(), &wanted);
                js.update_stream(&update).await.map_err(setup_error)?;
                tracing::info!(
                    stream = %cfg.stream,
                    duplicate_window = ?cfg.duplicate_window,
                    replicas = cfg.replicas,
                    "updated the stream's configuration"
                );
                // The update answers with the stream's info, not a handle: fetch one.
                return js
                    .get_stream(&cfg.stream)
                    .await
                    .map_err(|e| RelayError::nats("stream info after update", e));
            }
            Err(e) if is_stream_not_found(&e.kind()) => {
                match js.create_stream(&wanted).await {
                    Ok(stream) => {
                        tracing::info!(
                            stream = %cfg.stream,
                            subjects = ?wanted.subjects,
                            "created the stream"
                        );
                        return Ok(stream);
                    }
                    // Another relay created it meanwhile with other settings: update it.
                    Err(e) if attempts < 3 && is_name_in_use(&e) => continue,
                    Err(e) => return Err(setup_error(e)),
                }
            }
            Err(e) => return Err(RelayError::nats("stream info", e)),
        }
    }
}

fn is_stream_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn is_name_in_use(e: &async_nats::jetstream::context::CreateStreamError) -> bool {
    use async_nats::jetstream::context::CreateStreamErrorKind;
    // JSStreamNameExistErr: "stream name already in use with a different configuration".
    matches!(e.kind(), CreateStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NAME_EXIST)
}

/// Whether a stream-info error means the stream does not exist (NATS came back without its
/// data, or it was never created).
pub(crate) fn stream_missing(kind: &GetStreamErrorKind) -> bool {
    is_stream_not_found(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_config_has_the_managed_settings() {
        let cfg = RelayConfig::default();
        let wanted = stream_config(&cfg);
        assert_eq!(wanted.subjects, vec!["dossier.>".to_owned()]);
        assert!(has_managed_settings(&wanted, &wanted));
        let mut other = wanted.clone();
        other.duplicate_window = std::time::Duration::from_secs(60);
        other.max_age = std::time::Duration::from_secs(3600);
        assert!(!has_managed_settings(&other, &wanted));
        let merged = with_managed_settings(other, &wanted);
        assert!(has_managed_settings(&merged, &wanted));
        // Unmanaged settings chosen by an operator are kept.
        assert_eq!(merged.max_age, std::time::Duration::from_secs(3600));
    }
}
