//! Domain routes: keep a domain fresh for a while (or forever), and list domains.

use api::{DomainUpsert, List};
use axum::Json;
use axum::extract::{Path, State};
use model::{Domain, Name};
use store::Mutation;

use crate::AppState;
use crate::error::ApiError;
use crate::request::JsonBody;

/// `PUT /v1/domains/{name}`: the domain stays fresh until now + `ttl_seconds`, or
/// forever with 0.
pub(crate) async fn upsert(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<DomainUpsert>,
) -> Result<Json<Domain>, ApiError> {
    let name = Name::parse("name", &name)?;
    let ttl_ms = body.ttl_ms()?;
    let now = state.now();
    let domain = Domain {
        name,
        expires_at: ttl_ms.map(|ms| now.plus_millis(ms)),
    };
    state
        .commit(
            now,
            vec![Mutation::PutDomain {
                domain: domain.clone(),
            }],
        )
        .await?;
    Ok(Json(domain))
}

/// `GET /v1/domains`: every domain, fresh or expired.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<List<Domain>>, ApiError> {
    let items = state.store.list_domains().await?;
    Ok(Json(List { items }))
}
