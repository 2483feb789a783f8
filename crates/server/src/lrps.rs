//! LRP routes: create, list, get, change (scale, routes, annotation) and delete an LRP,
//! and read its instances and status. An LRP and its instance rows change together, in
//! one commit.

use api::{List, LrpCreate, LrpPatch, LrpStatus};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use model::{Instance, InstanceState, Lrp, LrpUpdate, Name, Presence, Timestamp};
use serde::Deserialize;
use store::{Expect, InstanceFilter, LrpFilter, Mutation};

use crate::error::{ApiError, empty, retry_raced};
use crate::request::{JsonBody, QueryParams, path_name, query_bool, query_name};
use crate::{AppState, stored_generation};

/// `POST /v1/lrps`: the LRP and its instances, all UNCLAIMED, in one commit.
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LrpCreate>,
) -> Result<(StatusCode, Json<Lrp>), ApiError> {
    let spec = body.into_spec()?;
    crate::request::check_image(&spec.rootfs)?;
    let now = state.now();
    let mut lrp = Lrp {
        spec,
        generation: 0,
        created_at: now,
        updated_at: now,
    };
    let mut mutations = vec![Mutation::PutLrp {
        lrp: Box::new(lrp.clone()),
        expect: Expect::Absent,
    }];
    mutations.extend((0..lrp.spec.instances).map(|index| Mutation::PutInstance {
        instance: Instance::unclaimed(lrp.spec.name.clone(), index, lrp.spec.domain.clone(), now),
        expect: Expect::Absent,
    }));
    let committed = state.commit(now, mutations).await?;
    lrp.generation = stored_generation(&committed, 0, Expect::Absent);
    Ok((StatusCode::CREATED, Json(lrp.redacted())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    domain: Option<String>,
}

/// `GET /v1/lrps?domain=D`
pub(crate) async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<Lrp>>, ApiError> {
    let filter = LrpFilter {
        domain: query_name("domain", query.domain.as_deref())?,
    };
    let items = state.store.list_lrps(&filter).await?;
    Ok(Json(List {
        items: items.iter().map(Lrp::redacted).collect(),
    }))
}

/// `GET /v1/lrps/{name}`
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Lrp>, ApiError> {
    let name = path_name("LRP", &name)?;
    Ok(Json(find(&state, &name).await?.redacted()))
}

/// `PATCH /v1/lrps/{name}`: applies the update to the LRP as it is now (or, with
/// `generation`, only if it is still at that generation), creating or deleting instance
/// rows when the instance count changes.
pub(crate) async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<LrpPatch>,
) -> Result<Json<Lrp>, ApiError> {
    let name = path_name("LRP", &name)?;
    let (expected, update) = body.into_update()?;
    retry_raced(|| patch_once(&state, &name, expected, &update))
        .await
        .map(|lrp| Json(lrp.redacted()))
}

async fn patch_once(
    state: &AppState,
    name: &Name,
    expected: Option<u64>,
    update: &LrpUpdate,
) -> Result<Lrp, ApiError> {
    let lrp = find(state, name).await?;
    if let Some(expected) = expected.filter(|g| *g != lrp.generation) {
        return Err(ApiError::conflict(format!(
            "LRP {name} is at generation {}, not {expected} as given",
            lrp.generation
        )));
    }
    let now = state.now();
    let mut next = lrp.updated(update, now)?;
    if next.spec == lrp.spec {
        // Nothing changes: no write, no event, the generation stays.
        return Ok(lrp);
    }
    let instances = list_instances(state, name).await?;
    let expect = Expect::Generation(lrp.generation);
    let mut mutations = vec![Mutation::PutLrp {
        lrp: Box::new(next.clone()),
        expect,
    }];
    mutations.extend(scale(&lrp, &next, &instances, now));
    let committed = state.commit(now, mutations).await?;
    next.generation = stored_generation(&committed, 0, expect);
    Ok(next)
}

/// The instance rows to create or delete when `before` becomes `after`: UNCLAIMED rows
/// for new indices, and every row (all presences) at an index past the new count.
fn scale(before: &Lrp, after: &Lrp, instances: &[Instance], now: Timestamp) -> Vec<Mutation> {
    let count = after.spec.instances;
    let removed = instances
        .iter()
        .filter(|i| i.index >= count)
        .map(|i| Mutation::DeleteInstance {
            lrp: i.lrp.clone(),
            index: i.index,
            presence: i.presence,
            expect: i.generation,
        });
    let has_ordinary = |index| {
        instances
            .iter()
            .any(|i| i.index == index && i.presence == Presence::Ordinary)
    };
    let added = (before.spec.instances..count)
        .filter(|index| !has_ordinary(*index))
        .map(|index| Mutation::PutInstance {
            instance: Instance::unclaimed(
                after.spec.name.clone(),
                index,
                after.spec.domain.clone(),
                now,
            ),
            expect: Expect::Absent,
        });
    removed.chain(added).collect()
}

/// `DELETE /v1/lrps/{name}`: the LRP and all its instance rows, in one commit.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = path_name("LRP", &name)?;
    retry_raced(|| async {
        let lrp = find(&state, &name).await?;
        let instances = list_instances(&state, &name).await?;
        // Instances go first, so no reader of the event stream sees an instance of an
        // LRP that is gone.
        let mut mutations: Vec<Mutation> = instances
            .into_iter()
            .map(|i| Mutation::DeleteInstance {
                lrp: i.lrp,
                index: i.index,
                presence: i.presence,
                expect: i.generation,
            })
            .collect();
        mutations.push(Mutation::DeleteLrp {
            name: name.clone(),
            expect: lrp.generation,
        });
        state.commit(state.now(), mutations).await
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /v1/lrps/{name}/instances`
pub(crate) async fn instances(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<List<Instance>>, ApiError> {
    let name = path_name("LRP", &name)?;
    find(&state, &name).await?;
    let items = list_instances(&state, &name).await?;
    Ok(Json(List { items }))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusQuery {
    usage: Option<String>,
}

/// `GET /v1/lrps/{name}/status[?usage=true]`; with `usage`, what each placed
/// instance's container uses, from its cell.
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<StatusQuery>,
) -> Result<Json<LrpStatus>, ApiError> {
    let name = path_name("LRP", &name)?;
    let with_usage = query_bool("usage", query.usage.as_deref())?;
    let lrp = find(&state, &name).await?;
    let instances = list_instances(&state, &name).await?;
    let pulling = state.pulls.of(&name, &instances);
    let usage = if with_usage {
        crate::usage::of(&state, &instances).await
    } else {
        Vec::new()
    };
    let mut status = LrpStatus::new(lrp.redacted(), instances);
    status.pulling = pulling;
    status.usage = usage;
    Ok(Json(status))
}

async fn find(state: &AppState, name: &Name) -> Result<Lrp, ApiError> {
    state
        .store
        .get_lrp(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no LRP named {name}")))
}

async fn list_instances(state: &AppState, name: &Name) -> Result<Vec<Instance>, ApiError> {
    let filter = InstanceFilter {
        lrp: Some(name.clone()),
        ..InstanceFilter::default()
    };
    Ok(state.store.list_instances(&filter).await?)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstancesQuery {
    lrp: Option<String>,
    cell: Option<String>,
    state: Option<String>,
}

/// `GET /v1/instances?lrp=&cell=&state=`: instances of every LRP, ordered by LRP, index
/// and presence (what `corral visualize` draws).
pub(crate) async fn all_instances(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<InstancesQuery>,
) -> Result<Json<List<Instance>>, ApiError> {
    let wanted = match query.state.as_deref() {
        None => None,
        Some(raw) => Some(
            [
                InstanceState::Unclaimed,
                InstanceState::Claimed,
                InstanceState::Running,
                InstanceState::Crashed,
            ]
            .into_iter()
            .find(|s| s.to_string().eq_ignore_ascii_case(raw))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "state",
                    format!(
                        "state must be one of UNCLAIMED, CLAIMED, RUNNING, CRASHED (got {raw:?})"
                    ),
                )
            })?,
        ),
    };
    let filter = InstanceFilter {
        lrp: query_name("lrp", query.lrp.as_deref())?,
        cell: query_name("cell", query.cell.as_deref())?,
        state: wanted,
    };
    let items = state.store.list_instances(&filter).await?;
    Ok(Json(List { items }))
}
