//! The OpenAPI 3.1 document of the API, `GET /v1/openapi.json`, built by hand. A test
//! checks that it describes exactly the routes of `crate::routes()`.

use axum::Json;
use serde_json::{Map, Value, json};

/// `GET /v1/openapi.json`
pub(crate) async fn serve() -> Json<Value> {
    Json(document())
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn list_of(name: &str) -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": { "items": { "type": "array", "items": schema(name) } },
    })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": schema("Name"),
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

/// An operation: `success` is (status, response); the error statuses it may answer
/// with refer to the shared error response.
fn operation(
    id: &str,
    summary: &str,
    parameters: Vec<Value>,
    request: Option<Value>,
    success: (&str, Value),
    errors: &[&str],
) -> Value {
    let mut responses = Map::new();
    responses.insert(success.0.to_owned(), success.1);
    for status in ["400", "401", "503"].iter().chain(errors) {
        responses.insert(
            (*status).to_owned(),
            json!({ "$ref": "#/components/responses/Error" }),
        );
    }
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(request) = request {
        op["requestBody"] = request;
    }
    op
}

/// What an exec WebSocket carries, for the operations' descriptions.
const EXEC_FRAMES: &str = " The first frame is text, `{\"command\": [..], \"tty\": {\"rows\", \"cols\"} | null, \"env\": [\"K=V\"]}`; then binary frames whose first byte is the channel (0 stdin, 1 stdout, 2 stderr) and text control frames (`{\"resize\": {..}}`, `{\"eof\": true}`; last from the server `{\"exit\": {\"code\": N}}` or `{\"error\": \"..\"}`). See docs/exec.md.";

/// An exec route (`/v1/lrps/{name}/instances/{index}/exec`, `/v1/tasks/{id}/exec`): a
/// WebSocket, whose frames OpenAPI cannot describe; the description says where they are.
fn exec_operation(id: &str, what: &str, params: Vec<Value>) -> Value {
    let mut op = operation(
        id,
        &format!(
            "Run a command in {what} over a WebSocket (send `Upgrade: websocket`).{EXEC_FRAMES}"
        ),
        params,
        None,
        (
            "101",
            json!({"description": "Switching to the WebSocket protocol."}),
        ),
        &["404"],
    );
    op["x-websocket"] = json!(true);
    op
}

fn public(mut op: Value) -> Value {
    op["security"] = json!([]);
    if let Some(responses) = op["responses"].as_object_mut() {
        responses.remove("401");
    }
    op
}

/// Errors of a request with a JSON body.
const BODY: [&str; 3] = ["413", "415", "422"];

pub(crate) fn document() -> Value {
    let name = || path_param("name", "The LRP's name.");
    let task_id = || path_param("id", "The task's id.");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Corral API",
            "version": "1",
            "description": "Corral's control plane: LRPs and their instances, tasks, cells, domains and the event stream. Every route except health and this document needs `Authorization: Bearer <token>`; errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.",
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/health": {
                "get": public(operation("health", "Whether the server is up.", vec![], None,
                    ("200", ok("The server is up.", json!({"type": "object", "properties": {"status": {"const": "ok"}}}))), &[])),
            },
            "/v1/openapi.json": {
                "get": public(operation("openapi", "This document.", vec![], None,
                    ("200", ok("The OpenAPI document.", json!({"type": "object"}))), &[])),
            },
            "/v1/lrps": {
                "post": operation("createLrp", "Create an LRP and its instances, all UNCLAIMED.", vec![],
                    Some(body(schema("LrpCreate"))), ("201", ok("The LRP as stored.", schema("Lrp"))), &["409", "413", "415", "422"]),
                "get": operation("listLrps", "List LRPs, ordered by name.",
                    vec![query_param("domain", "Only LRPs of this domain.", schema("Name"))], None,
                    ("200", ok("The LRPs.", list_of("Lrp"))), &[]),
            },
            "/v1/lrps/{name}": {
                "get": operation("getLrp", "One LRP.", vec![name()], None, ("200", ok("The LRP.", schema("Lrp"))), &["404"]),
                "patch": operation("updateLrp", "Scale an LRP or change its routes or annotation. With `generation`, only if the LRP is still at it.",
                    vec![name()], Some(body(schema("LrpPatch"))), ("200", ok("The LRP after the change.", schema("Lrp"))),
                    &["404", "409", "413", "415", "422"]),
                "delete": operation("deleteLrp", "Delete an LRP and all its instances.", vec![name()], None,
                    ("204", json!({"description": "Deleted."})), &["404"]),
            },
            "/v1/instances": {
                "get": operation("listInstances", "Instances of every LRP, ordered by LRP, index and presence; each filter narrows the list.",
                    vec![
                        query_param("lrp", "Only this LRP's.", schema("Name")),
                        query_param("cell", "Only those on this cell.", schema("Name")),
                        query_param("state", "Only those in this state.", schema("InstanceState")),
                    ], None,
                    ("200", ok("The instances.", list_of("Instance"))), &[]),
            },
            "/v1/lrps/{name}/instances": {
                "get": operation("listLrpInstances", "The instances of an LRP, ordered by index and presence.", vec![name()], None,
                    ("200", ok("The instances.", list_of("Instance"))), &["404"]),
            },
            "/v1/lrps/{name}/status": {
                "get": operation("getLrpStatus", "An LRP with its instances and their counts by state; with `usage=true`, also what each placed instance's container uses (CPU, memory, disk), asked of its cell.",
                    vec![name(), query_param("usage", "Ask the cells what the containers use.", json!({"type": "boolean"}))], None,
                    ("200", ok("The status.", schema("LrpStatus"))), &["404"]),
            },
            "/v1/lrps/{name}/instances/{index}/exec": {
                "get": exec_operation("execInInstance", "a RUNNING instance's container", vec![
                    path_param("name", "The LRP's name."),
                    json!({"name": "index", "in": "path", "required": true, "description": "The instance's index.",
                           "schema": {"type": "integer", "minimum": 0}}),
                ]),
            },
            "/v1/tasks": {
                "post": operation("createTask", "Submit a task. Without an id, a UUID is generated.", vec![],
                    Some(body(schema("TaskCreate"))), ("201", ok("The task, PENDING.", schema("Task"))), &["409", "413", "415", "422"]),
                "get": operation("listTasks", "List tasks, oldest first.",
                    vec![
                        query_param("domain", "Only tasks of this domain.", schema("Name")),
                        query_param("state", "Only tasks in this state.", schema("TaskState")),
                        query_param("cell", "Only tasks on this cell.", schema("Name")),
                    ], None, ("200", ok("The tasks.", list_of("Task"))), &[]),
            },
            "/v1/tasks/{id}": {
                "get": operation("getTask", "One task.", vec![task_id()], None, ("200", ok("The task.", schema("Task"))), &["404"]),
                "delete": operation("deleteTask", "Delete a COMPLETED or RESOLVING task.", vec![task_id()], None,
                    ("204", json!({"description": "Deleted."})), &["404", "409"]),
            },
            "/v1/tasks/{id}/cancel": {
                "post": operation("cancelTask", "Cancel a PENDING or RUNNING task: it completes as failed with \"task was cancelled\".",
                    vec![task_id()], None, ("200", ok("The task, COMPLETED.", schema("Task"))), &["404", "409"]),
            },
            "/v1/cells": {
                "get": operation("listCells", "The cells whose presence is live.", vec![], None,
                    ("200", ok("The cells.", list_of("Cell"))), &[]),
            },
            "/v1/cells/heartbeat": {
                "post": operation("cellHeartbeat", "Cell protocol: renew the presence of every cell listed for the presence TTL.",
                    vec![], Some(body(schema("Heartbeat"))), ("200", ok("How long presences live and how often to renew them.", schema("HeartbeatReply"))), &BODY),
            },
            "/v1/cells/assignments": {
                "post": operation("cellAssignments", "Cell protocol: everything assigned to the cells listed (instances CLAIMED or RUNNING there, tasks placed there), for reconciliation.",
                    vec![], Some(body(schema("AssignmentsRequest"))), ("200", ok("The work assigned.", schema("WorkBatch"))), &BODY),
            },
            "/v1/cells/reports": {
                "post": operation("cellReports", "Cell protocol: apply what happened on cells, each report on its own; `stale` tells the cell to stop that container or not start that task.",
                    vec![], Some(body(schema("Reports"))), ("200", ok("The outcome of each report, in order.", schema("ReportsReply"))), &BODY),
            },
            "/v1/lrps/{name}/logs": {
                "get": operation("lrpLogs",
                    "The LRP's log: its instances' output and what the cells and the server say about them (created, running, crashed, scaled), merged by time, as newline-delimited LogEntry JSON, oldest first. Blank lines are keep-alives.",
                    vec![path_param("name", "The LRP's name."), log_tail_param(), log_follow_param()], None,
                    ("200", log_stream()), &[]),
            },
            "/v1/tasks/{id}/exec": {
                "get": exec_operation("execInTask", "a RUNNING task's container",
                    vec![path_param("id", "The task's id.")]),
            },
            "/v1/tasks/{id}/logs": {
                "get": operation("taskLogs",
                    "The task's log, as for an LRP; a followed stream ends shortly after the task completes.",
                    vec![path_param("id", "The task's id."), log_tail_param(), log_follow_param()], None,
                    ("200", log_stream()), &[]),
            },
            "/v1/domains": {
                "get": operation("listDomains", "All domains, fresh or expired.", vec![], None,
                    ("200", ok("The domains.", list_of("Domain"))), &[]),
            },
            "/v1/domains/{name}": {
                "put": operation("upsertDomain", "Keep a domain fresh for `ttl_seconds` (0: forever).",
                    vec![path_param("name", "The domain's name.")], Some(body(schema("DomainUpsert"))),
                    ("200", ok("The domain.", schema("Domain"))), &BODY),
            },
            "/v1/events": {
                "get": operation("streamEvents",
                    "Server-Sent Events: `id` is the event's sequence number, `event` its kind, `data` an EventMessage. Resumes after the `Last-Event-ID` header or `after`; without either, starts with the next event. A first `resync` event says that events were missed.",
                    vec![
                        json!({"name": "Last-Event-ID", "in": "header", "required": false, "description": "Resume after this sequence number.", "schema": {"type": "integer", "minimum": 0}}),
                        query_param("after", "Resume after this sequence number.", json!({"type": "integer", "minimum": 0})),
                        query_param("topics", "Comma-separated: lrp, instance, task, domain, cell. All when absent.", json!({"type": "string"})),
                    ], None,
                    ("200", json!({"description": "The stream.", "content": {"text/event-stream": {"schema": schema("EventMessage")}}})), &[]),
            },
            "/metrics": {
                "get": operation("metrics",
                    "Prometheus metrics in the text exposition format 0.0.4 (names in docs/metrics.md). Needs the bearer token like the rest of the API; Prometheus sends it with `authorization: { credentials_file: ... }`.",
                    vec![], None,
                    ("200", json!({"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}})), &[]),
            },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": { "description": "The request failed; `code` says why and `field` names the input at fault.",
                    "content": { "application/json": { "schema": schema("ErrorBody") } } },
            },
            "schemas": schemas(),
        },
    })
}

fn log_tail_param() -> Value {
    query_param(
        "tail",
        "How many of the newest lines to start with (default 100, at most 10000).",
        json!({"type": "integer", "minimum": 0, "maximum": api::MAX_LOG_TAIL}),
    )
}

fn log_follow_param() -> Value {
    query_param(
        "follow",
        "Keep the stream open and send each new line.",
        json!({"type": "boolean"}),
    )
}

fn log_stream() -> Value {
    json!({"description": "The log.", "content": {"application/x-ndjson": {"schema": {
    "type": "object", "required": ["at", "source", "text"],
    "properties": {
        "at": {"type": "integer", "description": "Milliseconds since the Unix epoch."},
        "source": {"type": "string", "enum": ["out", "err", "cell", "api"]},
        "index": {"type": "integer", "minimum": 0},
        "text": {"type": "string"},
    }}}}})
}

fn schemas() -> Value {
    let int = |min: i64| json!({ "type": "integer", "minimum": min });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let env = json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": "Environment variables, in order." });
    let resources_in = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "memory_mb": int(0), "disk_mb": int(0),
            "cpu_weight": { "type": "integer", "minimum": 1, "maximum": 100 },
            "max_pids": int(0),
        },
    });
    // Several literals: one would exceed the macro's recursion limit.
    let parts = [
        json!({
            "Name": { "type": "string", "pattern": "^[a-zA-Z0-9_-]+$", "maxLength": 128 },
            "Timestamp": { "type": "integer", "minimum": 0, "description": "Milliseconds since the Unix epoch." },
            "Rootfs": { "type": "string", "description": "`preloaded:STACK`, `docker://REGISTRY/REPO:TAG` or `oci:PATH`." },
            "RegistryCredentials": {
                "type": "object", "additionalProperties": false, "required": ["username"],
                "description": "A login for the registry of a docker:// rootfs. The password is required when creating and never shown: answers and events carry the username alone.",
                "properties": { "username": { "type": "string", "maxLength": 1024 }, "password": { "type": "string", "maxLength": 1024, "writeOnly": true } },
            },
            "ResourcesInput": resources_in,
            "Resources": {
                "type": "object", "required": ["memory_mb", "disk_mb", "cpu_weight", "max_pids"],
                "properties": { "memory_mb": int(0), "disk_mb": int(0), "cpu_weight": int(1), "max_pids": int(0) },
            },
            "Action": {
                "description": "One node of the action tree: an object with exactly one key naming its kind.",
                "oneOf": [
                    { "type": "object", "additionalProperties": false, "required": ["run"], "properties": { "run": schema("RunAction") } },
                    { "type": "object", "additionalProperties": false, "required": ["run_image"], "description": "The image's ENTRYPOINT and CMD (args replace CMD), in its WorkingDir, as its User; only with a docker:// or oci: rootfs.", "properties": { "run_image": {
                        "type": "object", "additionalProperties": false,
                        "properties": { "args": strings, "env": env } } } },
                    { "type": "object", "additionalProperties": false, "required": ["download"], "properties": { "download": schema("DownloadAction") } },
                    { "type": "object", "additionalProperties": false, "required": ["serial"], "properties": { "serial": { "type": "array", "items": schema("Action") } } },
                    { "type": "object", "additionalProperties": false, "required": ["parallel"], "properties": { "parallel": { "type": "array", "items": schema("Action") } } },
                    { "type": "object", "additionalProperties": false, "required": ["codependent"], "properties": { "codependent": { "type": "array", "items": schema("Action") } } },
                    { "type": "object", "additionalProperties": false, "required": ["timeout"], "properties": { "timeout": {
                        "type": "object", "additionalProperties": false, "required": ["action", "timeout_ms"],
                        "properties": { "action": schema("Action"), "timeout_ms": int(1) } } } },
                    { "type": "object", "additionalProperties": false, "required": ["try"], "properties": { "try": schema("Action") } },
                ],
            },
        }),
        json!({
            "RunAction": {
                "type": "object", "additionalProperties": false, "required": ["path"],
                "properties": {
                    "path": { "type": "string" }, "args": strings, "dir": { "type": "string" }, "env": env,
                    "user": { "type": "string" },
                    "limits": { "type": "object", "additionalProperties": false, "properties": { "nofile": int(0), "nproc": int(0) } },
                },
            },
            "DownloadAction": {
                "type": "object", "additionalProperties": false, "required": ["from", "to"],
                "properties": {
                    "from": { "type": "string", "format": "uri" }, "to": { "type": "string" },
                    "cache_key": { "type": "string" }, "user": { "type": "string" },
                    "checksum": { "type": "object", "additionalProperties": false, "required": ["algorithm", "value"],
                        "properties": { "algorithm": { "enum": ["sha256", "sha512"] }, "value": { "type": "string" } } },
                },
            },
            "Check": {
                "type": "object", "required": ["kind"],
                "properties": {
                    "kind": { "enum": ["tcp", "http", "exec"] },
                    "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                    "path": { "type": "string", "description": "URL path (http) or program (exec)." },
                    "args": strings, "interval_ms": int(1), "timeout_ms": int(1),
                },
            },
            "Checks": {
                "type": "object", "additionalProperties": false,
                "properties": { "start_timeout_ms": int(1), "liveness": schema("Check"), "readiness": schema("Check") },
            },
            "Routes": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "http": { "type": "array", "items": { "type": "object", "additionalProperties": false, "required": ["hostname", "port"],
                        "properties": { "hostname": { "type": "string" }, "port": { "type": "integer", "minimum": 1, "maximum": 65535 } } } },
                    "tcp": { "type": "array", "items": { "type": "object", "additionalProperties": false, "required": ["external_port", "container_port"],
                        "properties": { "external_port": { "type": "integer", "minimum": 1, "maximum": 65535 }, "container_port": { "type": "integer", "minimum": 1, "maximum": 65535 } } } },
                },
            },
            "CrashPolicy": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "immediate_restarts": int(0), "min_backoff_ms": int(0), "max_backoff_ms": int(0),
                    "reset_after_ms": int(0), "max_restarts": int(0),
                },
            },
        }),
        json!({
            "LrpCreate": {
                "type": "object", "additionalProperties": false, "required": ["name"],
                "description": "Without `action`, a docker:// or oci: rootfs runs the image's own command (`run_image`).",
                "properties": {
                    "name": schema("Name"), "domain": schema("Name"), "rootfs": schema("Rootfs"),
                    "image_credentials": schema("RegistryCredentials"),
                    "instances": { "type": "integer", "minimum": 0, "maximum": 100000, "default": 1 },
                    "resources": schema("ResourcesInput"), "setup": schema("Action"), "action": schema("Action"),
                    "env": env, "ports": { "type": "array", "items": { "type": "integer", "minimum": 1, "maximum": 65535 } },
                    "checks": schema("Checks"), "routes": schema("Routes"), "placement_tags": strings,
                    "crash_policy": schema("CrashPolicy"), "annotation": { "type": "string", "maxLength": 10240 },
                },
            },
            "LrpPatch": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "generation": { "type": "integer", "minimum": 0, "description": "Apply only if the LRP is at this generation." },
                    "instances": { "type": "integer", "minimum": 0, "maximum": 100000 },
                    "routes": schema("Routes"), "annotation": { "type": "string", "maxLength": 10240 },
                },
            },
            "Lrp": {
                "type": "object",
                "required": ["name", "domain", "rootfs", "instances", "resources", "action", "checks", "crash_policy", "generation", "created_at", "updated_at"],
                "properties": {
                    "name": schema("Name"), "domain": schema("Name"), "rootfs": schema("Rootfs"), "instances": int(0),
                    "resources": schema("Resources"), "setup": schema("Action"), "action": schema("Action"), "env": env,
                    "ports": { "type": "array", "items": { "type": "integer" } }, "checks": schema("Checks"), "routes": schema("Routes"),
                    "placement_tags": strings, "crash_policy": schema("CrashPolicy"), "annotation": { "type": "string" },
                    "generation": int(1), "created_at": schema("Timestamp"), "updated_at": schema("Timestamp"),
                },
            },
            "InstanceState": { "enum": ["UNCLAIMED", "CLAIMED", "RUNNING", "CRASHED"] },
            "Instance": {
                "type": "object", "required": ["lrp", "index", "domain", "presence", "state", "since", "generation"],
                "properties": {
                    "lrp": schema("Name"), "index": int(0), "domain": schema("Name"),
                    "presence": { "enum": ["ORDINARY", "EVACUATING", "SUSPECT"] }, "state": schema("InstanceState"),
                    "key": { "type": "object", "required": ["instance_id", "cell_id"],
                        "properties": { "instance_id": { "type": "string" }, "cell_id": schema("Name") } },
                    "address": { "type": "string" },
                    "ports": { "type": "array", "items": { "type": "object", "required": ["container_port", "host_port"],
                        "properties": { "container_port": { "type": "integer" }, "host_port": { "type": "integer" } } } },
                    "routable": { "type": "boolean" }, "crash_count": int(0), "crash_reason": { "type": "string" },
                    "placement_error": { "type": "string" }, "since": schema("Timestamp"), "generation": int(1),
                },
            },
            "LrpStatus": {
                "type": "object", "required": ["lrp", "instances", "running", "unclaimed", "claimed", "crashed"],
                "properties": {
                    "lrp": schema("Lrp"), "instances": { "type": "array", "items": schema("Instance") },
                    "running": int(0), "unclaimed": int(0), "claimed": int(0), "crashed": int(0),
                    "evacuating": int(0), "suspect": int(0),
                    "pulling": { "type": "array", "items": { "type": "object",
                        "properties": { "index": int(0), "instance_id": { "type": "string" }, "done_bytes": int(0), "total_bytes": int(0) } } },
                    "usage": { "type": "array", "items": { "type": "object",
                        "required": ["index", "instance_id", "memory_bytes", "disk_bytes"],
                        "properties": { "index": int(0), "instance_id": { "type": "string" },
                            "cpu_percent": { "type": "number", "description": "100 is one core fully busy; absent until sampled twice." },
                            "memory_bytes": int(0), "disk_bytes": int(0) } } },
                },
            },
        }),
        json!({
            "TaskState": { "enum": ["PENDING", "RUNNING", "COMPLETED", "RESOLVING"] },
            "TaskCreate": {
                "type": "object", "additionalProperties": false,
                "description": "Without `action`, a docker:// or oci: rootfs runs the image's own command (`run_image`).",
                "properties": {
                    "id": schema("Name"), "domain": schema("Name"), "rootfs": schema("Rootfs"),
                    "image_credentials": schema("RegistryCredentials"),
                    "resources": schema("ResourcesInput"), "action": schema("Action"), "env": env,
                    "result_file": { "type": "string" }, "completion_callback_url": { "type": "string", "format": "uri" },
                    "placement_tags": strings, "annotation": { "type": "string", "maxLength": 10240 },
                },
            },
            "Task": {
                "type": "object",
                "required": ["id", "domain", "rootfs", "resources", "action", "state", "failed", "rejection_count", "created_at", "updated_at", "generation"],
                "properties": {
                    "id": schema("Name"), "domain": schema("Name"), "rootfs": schema("Rootfs"), "resources": schema("Resources"),
                    "action": schema("Action"), "env": env, "result_file": { "type": "string" },
                    "completion_callback_url": { "type": "string" }, "placement_tags": strings, "annotation": { "type": "string" },
                    "state": schema("TaskState"), "cell_id": schema("Name"), "result": { "type": "string" },
                    "failed": { "type": "boolean" }, "failure_reason": { "type": "string" }, "rejection_count": int(0),
                    "rejection_reason": { "type": "string" }, "created_at": schema("Timestamp"), "updated_at": schema("Timestamp"),
                    "first_completed_at": schema("Timestamp"), "generation": int(1),
                },
            },
            "DomainUpsert": {
                "type": "object", "additionalProperties": false, "required": ["ttl_seconds"],
                "properties": { "ttl_seconds": { "type": "integer", "minimum": 0, "description": "0: fresh forever." } },
            },
            "Domain": {
                "type": "object", "required": ["name"],
                "properties": { "name": schema("Name"), "expires_at": schema("Timestamp") },
            },
            "Cell": {
                "type": "object", "required": ["id", "address", "capacity"],
                "properties": {
                    "id": schema("Name"), "address": { "type": "string" }, "zone": { "type": "string" },
                    "capacity": { "type": "object", "required": ["memory_mb", "disk_mb", "containers"],
                        "properties": { "memory_mb": int(0), "disk_mb": int(0), "containers": int(0) } },
                    "rootfs_providers": strings, "placement_tags": strings, "optional_placement_tags": strings,
                    "attributes": { "type": "object", "additionalProperties": { "type": "string" } },
                    "evacuating": { "type": "boolean", "description": "The cell is draining: no new work is placed on it while it hands its instances over." },
                },
            },
            "Heartbeat": { "type": "object", "required": ["cells"], "additionalProperties": false,
                "properties": { "cells": { "type": "array", "items": schema("Cell") } } },
            "HeartbeatReply": { "type": "object", "required": ["ttl_ms", "interval_ms"],
                "properties": { "ttl_ms": int(0), "interval_ms": int(0) } },
            "AssignmentsRequest": { "type": "object", "required": ["cells"], "additionalProperties": false,
                "properties": { "cells": { "type": "array", "items": schema("Name") } } },
            "WorkBatch": { "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": { "type": "object", "required": ["kind", "cell"],
                    "description": "`start_instance` {lrp, index, instance_id}, `keep_instance` {lrp, index, instance_id} (suspect or evacuating: keep if running, never start), `stop_instance` {lrp, index, instance_id}, `start_task` {task}, `cancel_task` {id}.",
                    "properties": { "kind": { "enum": ["start_instance", "keep_instance", "stop_instance", "start_task", "cancel_task"] }, "cell": schema("Name") } } } } },
            "Reports": { "type": "object", "required": ["reports"], "additionalProperties": false,
                "properties": { "reports": { "type": "array", "items": { "type": "object", "required": ["kind", "cell"],
                    "description": "`instance_running` {lrp, index, instance_id, address, ports, routable}, `instance_crashed` {lrp, index, instance_id, reason}, `instance_stopped` {lrp, index, instance_id}, `instance_evacuating` {lrp, index, instance_id} (a draining cell asks for a replacement of a running instance and resends until told: `ok` keep the container, `stale` stop it), `instance_evacuating_claimed` {lrp, index, instance_id} (a draining cell gives back an instance it claimed but does not run: placed elsewhere at once), `task_started` {id}, `task_completed` {id, failed, failure_reason, result}, `task_rejected` {id, reason}.",
                    "properties": { "kind": { "enum": ["instance_running", "instance_crashed", "instance_stopped", "instance_evacuating", "instance_evacuating_claimed", "task_started", "task_completed", "task_rejected"] }, "cell": schema("Name") } } } } },
            "ReportsReply": { "type": "object", "required": ["results"],
                "properties": { "results": { "type": "array", "items": { "type": "object", "required": ["result"],
                    "properties": { "result": { "enum": ["ok", "stale"] }, "message": { "type": "string" } } } } } },
            "EventMessage": {
                "type": "object", "required": ["seq", "kind", "at", "data"],
                "properties": {
                    "seq": int(0),
                    "kind": { "type": "string", "description": "lrp_created|changed|removed, instance_created|changed|removed, task_created|changed|removed, domain_changed, cell_appeared|changed|removed|expired, resync." },
                    "at": schema("Timestamp"),
                    "data": { "description": "The row after the change; for removals, its key; for cells, the cell." },
                },
            },
            "ErrorBody": {
                "type": "object", "required": ["error"],
                "properties": { "error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": { "enum": ["bad_request", "unauthorized", "not_found", "method_not_allowed", "conflict", "payload_too_large", "unsupported_media_type", "invalid", "internal", "unavailable"] },
                        "message": { "type": "string" },
                        "field": { "type": "string", "description": "The input at fault, as a dotted path." },
                    },
                } },
            },
        }),
    ];
    let mut all = Map::new();
    for part in parts {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn documents_exactly_the_routes() {
        let doc = document();
        let routes: BTreeSet<(String, String)> = crate::routes()
            .into_iter()
            .map(|r| (r.path.to_owned(), r.verb.as_str().to_owned()))
            .collect();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |verb| (path.clone(), verb.clone()))
            })
            .collect();
        assert_eq!(routes, documented);
        for route in crate::routes() {
            let op = &doc["paths"][route.path][route.verb.as_str()];
            assert_eq!(
                op["security"] == json!([]),
                route.public,
                "{} {}: documented security matches the router",
                route.verb.as_str(),
                route.path
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
    }
}
