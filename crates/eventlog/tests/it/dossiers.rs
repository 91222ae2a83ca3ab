//! The one reader of whole dossiers up to a position: every column choice reads the same
//! dossiers, events and order; the cut, the routing filter and the lookup by ids hold.

use eventlog::{
    DossierAppend, DossierEvents, EventBody, EventColumns, EventText, ExpectedVersion, Routing,
    RoutingFilter, StoredEvent,
};
use futures::TryStreamExt;

use crate::support::*;

/// What recomputing figures reads of a stored event.
fn body(e: &StoredEvent) -> EventBody {
    EventBody {
        position: e.position,
        version: e.version,
        event_type: e.event_type.clone(),
        occurred_at: e.occurred_at,
        payload: e.payload.clone(),
    }
}

/// The dossiers of `all` with their events `<= up_to` that `keep` keeps, by id then version.
fn expected(
    all: &[StoredEvent],
    up_to: i64,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Vec<DossierEvents> {
    let mut kept: Vec<StoredEvent> = all
        .iter()
        .filter(|e| e.position <= up_to && keep(e))
        .cloned()
        .collect();
    kept.sort_by(|a, b| (&a.dossier_id, a.version).cmp(&(&b.dossier_id, b.version)));
    eventlog::dossiers::group_events(kept)
}

fn bodies(dossiers: &[DossierEvents]) -> Vec<DossierEvents<EventBody>> {
    dossiers
        .iter()
        .map(|d| DossierEvents {
            dossier_id: d.dossier_id.clone(),
            events: d.events.iter().map(body).collect(),
        })
        .collect()
}

async fn read<E: EventColumns>(
    conn: &mut sqlx::PgConnection,
    up_to: i64,
    routing: &RoutingFilter,
) -> Vec<DossierEvents<E>> {
    eventlog::dossiers_up_to::<E>(conn, up_to, routing)
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn both_column_choices_read_the_same_dossiers_up_to_a_position() {
    let (db, log) = log().await;
    let elsewhere = Routing {
        agency: "ubnd-xa-tinh-ky".into(),
        ..routing()
    };
    // Interleaved: the dossiers' events are spread over the positions.
    let mut all = Vec::new();
    let first = log
        .append(vec![
            dossier("HS-B", ExpectedVersion::NoStream, events(2)),
            dossier("HS-A", ExpectedVersion::NoStream, events(1)),
            DossierAppend {
                routing: elsewhere.clone(),
                ..dossier("HS-C", ExpectedVersion::NoStream, events(1))
            },
        ])
        .await
        .unwrap();
    all.extend(first.events);
    let second = log
        .append(vec![
            dossier("HS-A", ExpectedVersion::Exact(1), events(2)),
            dossier("HS-D", ExpectedVersion::NoStream, events(1)),
        ])
        .await
        .unwrap();
    all.extend(second.events);
    let third = log
        .append(vec![dossier("HS-B", ExpectedVersion::Exact(2), events(1))])
        .await
        .unwrap();
    all.extend(third.events);
    let head = all.iter().map(|e| e.position).max().unwrap();
    assert_eq!(head, 8);

    let mut conn = db.connect().await;
    let everything = RoutingFilter::default();
    for up_to in [0, 1, 4, 5, head, head + 10] {
        let want = expected(&all, up_to, |_| true);
        let stored = read::<StoredEvent>(&mut conn, up_to, &everything).await;
        assert_eq!(stored, want, "up to {up_to}");
        let read_bodies = read::<EventBody>(&mut conn, up_to, &everything).await;
        assert_eq!(read_bodies, bodies(&want), "bodies up to {up_to}");
        // The payload as text: parsed, the same payload, and the other columns the same.
        let texts = read::<EventText>(&mut conn, up_to, &everything).await;
        let parsed: Vec<DossierEvents<EventBody>> = texts
            .into_iter()
            .map(|d| DossierEvents {
                dossier_id: d.dossier_id,
                events: d
                    .events
                    .into_iter()
                    .map(|e| EventBody {
                        position: e.position,
                        version: e.version,
                        event_type: e.event_type,
                        occurred_at: e.occurred_at,
                        payload: serde_json::from_str(&e.payload).unwrap(),
                    })
                    .collect(),
            })
            .collect();
        assert_eq!(parsed, bodies(&want), "texts up to {up_to}");
    }
    // A cut inside a dossier keeps the prefix of its versions.
    let cut = read::<EventBody>(&mut conn, 5, &everything).await;
    let a = cut.iter().find(|d| d.dossier_id == "HS-A").unwrap();
    assert_eq!(
        a.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2]
    );

    // The routing filter keeps or drops whole dossiers.
    let only_elsewhere = RoutingFilter {
        agency: Some(elsewhere.agency.clone()),
        ..RoutingFilter::default()
    };
    let want = expected(&all, head, |e| e.routing.agency == elsewhere.agency);
    assert_eq!(want.len(), 1);
    assert_eq!(
        read::<StoredEvent>(&mut conn, head, &only_elsewhere).await,
        want
    );
    assert_eq!(
        read::<EventBody>(&mut conn, head, &only_elsewhere).await,
        bodies(&want)
    );

    // By ids: the dossiers asked for that have events up to the position, in id order.
    let ids = ["HS-D", "HS-B", "HS-NONE", "HS-A"];
    let want = expected(&all, 6, |e| ids.contains(&e.dossier_id.as_str()));
    assert_eq!(
        eventlog::these_dossiers_up_to::<StoredEvent>(&mut conn, &ids, 6)
            .await
            .unwrap(),
        want
    );
    assert_eq!(
        eventlog::these_dossiers_up_to::<EventBody>(&mut conn, &ids, 6)
            .await
            .unwrap(),
        bodies(&want)
    );
}
