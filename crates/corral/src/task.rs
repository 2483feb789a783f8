//! The task verbs: `task submit`, `task ls`, `task get`, `task cancel`, `task rm`.

use anyhow::{Context, Result};
use api::{ResourcesInput, TaskCreate};
use client::{Client, TaskFilter};
use model::{Task, TaskState, Timestamp};

use crate::cli::{TaskCommand, TaskIdArgs, TaskLsArgs, TaskSubmitArgs};
use crate::lrp::{command_action, describe_action, megabytes, registry_login};
use crate::output::{self, ago, print_json, render, table, utc};

pub async fn run(client: &Client, command: &TaskCommand) -> Result<()> {
    match command {
        TaskCommand::Submit(args) => submit(client, args).await,
        TaskCommand::Ls(args) => ls(client, args).await,
        TaskCommand::Get(args) => get(client, args).await,
        TaskCommand::Cancel(args) => cancel(client, args).await,
        TaskCommand::Rm(args) => rm(client, args).await,
        TaskCommand::Exec(args) => {
            crate::exec::run_in(client, client::ExecIn::Task(&args.id), &args.run).await
        }
        TaskCommand::Logs(args) => {
            crate::logs::run(client, client::LogsOf::Task(&args.id), &args.logs).await
        }
    }
}

async fn submit(client: &Client, args: &TaskSubmitArgs) -> Result<()> {
    let request = task_create(args)?;
    let task = client
        .create_task(&request)
        .await
        .context("submit the task")?;
    if args.read.json {
        return print_json(&task);
    }
    println!("Submitted task {} ({}).", task.id, task.state);
    println!("Follow it with `corral task get {}`.", task.id);
    Ok(())
}

async fn ls(client: &Client, args: &TaskLsArgs) -> Result<()> {
    let filter = TaskFilter {
        domain: args.domain.clone(),
        state: args.state.map(TaskState::from),
        cell: args.cell.clone(),
    };
    let tasks = client.tasks(&filter).await.context("list tasks")?;
    if args.read.json {
        return print_json(&api::List { items: tasks });
    }
    print!("{}", render_tasks(&tasks, output::now()));
    Ok(())
}

async fn get(client: &Client, args: &TaskIdArgs) -> Result<()> {
    let task = client
        .task(&args.id)
        .await
        .with_context(|| format!("get task {}", args.id))?;
    if args.read.json {
        return print_json(&task);
    }
    print!("{}", render_task(&task, output::now()));
    Ok(())
}

async fn cancel(client: &Client, args: &TaskIdArgs) -> Result<()> {
    let task = client
        .cancel_task(&args.id)
        .await
        .with_context(|| format!("cancel task {}", args.id))?;
    if args.read.json {
        return print_json(&task);
    }
    println!("Cancelled task {} ({}).", task.id, task.state);
    Ok(())
}

async fn rm(client: &Client, args: &TaskIdArgs) -> Result<()> {
    client
        .delete_task(&args.id)
        .await
        .with_context(|| format!("remove task {}", args.id))?;
    println!("Removed task {}.", args.id);
    Ok(())
}

/// The submit request for the flags.
pub fn task_create(args: &TaskSubmitArgs) -> Result<TaskCreate> {
    let action = command_action(&args.command, args.rootfs.as_deref())?;
    Ok(TaskCreate {
        image_credentials: registry_login(
            args.registry_username.as_deref(),
            args.registry_password.as_ref().map(|p| p.0.as_str()),
        )?,
        id: args.id.clone(),
        domain: args.domain.clone(),
        rootfs: args.rootfs.clone(),
        resources: ResourcesInput {
            memory_mb: args.memory.map(megabytes),
            disk_mb: args.disk.map(megabytes),
            ..ResourcesInput::default()
        },
        action,
        env: args.env.clone(),
        result_file: args.result_file.clone(),
        completion_callback_url: None,
        placement_tags: vec![],
        annotation: args.annotation.clone().unwrap_or_default(),
    })
}

/// The `task ls` table.
pub fn render_tasks(tasks: &[Task], now: Timestamp) -> String {
    if tasks.is_empty() {
        return "No tasks.\n".to_owned();
    }
    let mut t = table(["ID", "STATE", "CELL", "DOMAIN", "CREATED", "OUTCOME"]);
    for task in tasks {
        t.add_row([
            task.id.to_string(),
            task.state.to_string(),
            task.cell_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            task.spec.domain.to_string(),
            ago(task.created_at, now),
            outcome(task),
        ]);
    }
    render(&t)
}

/// One task, field by field.
pub fn render_task(task: &Task, now: Timestamp) -> String {
    let mut fields = vec![
        ("state", task.state.to_string()),
        ("outcome", outcome(task)),
        ("domain", task.spec.domain.to_string()),
        ("command", describe_action(&task.spec.action)),
        ("rootfs", task.spec.rootfs.to_string()),
        (
            "resources",
            format!(
                "{} MB memory, {} MB disk",
                task.spec.resources.memory_mb, task.spec.resources.disk_mb
            ),
        ),
        (
            "cell",
            task.cell_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        ),
    ];
    if let Some(file) = &task.spec.result_file {
        fields.push(("result file", file.clone()));
    }
    if task.rejection_count > 0 {
        fields.push((
            "rejections",
            format!(
                "{} ({})",
                task.rejection_count,
                task.rejection_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        ));
    }
    if !task.spec.annotation.is_empty() {
        fields.push(("annotation", task.spec.annotation.clone()));
    }
    fields.push((
        "created",
        format!(
            "{} UTC ({})",
            utc(task.created_at),
            ago(task.created_at, now)
        ),
    ));
    fields.push(("updated", ago(task.updated_at, now)));
    let mut out = format!("task {}\n", task.id);
    for (label, value) in fields {
        out.push_str(&format!("  {label:<11} {value}\n"));
    }
    if let Some(result) = &task.result {
        out.push_str("result:\n");
        out.push_str(result);
        if !result.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// How a task ended, or that it has not yet.
fn outcome(task: &Task) -> String {
    match task.state {
        TaskState::Pending | TaskState::Running => "-".to_owned(),
        TaskState::Completed | TaskState::Resolving if task.failed => format!(
            "failed: {}",
            task.failure_reason.as_deref().unwrap_or("no reason given")
        ),
        TaskState::Completed | TaskState::Resolving => "succeeded".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use model::Name;

    use super::*;
    use crate::cli::{Cli, Command};

    fn submit_args(args: &[&str]) -> TaskSubmitArgs {
        let cli = Cli::try_parse_from(["corral", "task", "submit"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{args:?} parses: {e}"));
        match cli.command {
            Command::Task(TaskCommand::Submit(submit)) => submit,
            other => panic!("not task submit: {other:?}"),
        }
    }

    #[test]
    fn submit_requests_from_flags() {
        let request = task_create(&submit_args(&[
            "--id",
            "t1",
            "--memory",
            "64",
            "--result-file",
            "/tmp/out",
            "-e",
            "A=1",
            "--",
            "sh",
            "-c",
            "echo hi > /tmp/out",
        ]))
        .expect("builds");
        assert_eq!(
            serde_json::to_value(&request).expect("serializes"),
            serde_json::json!({"id": "t1", "resources": {"memory_mb": 64},
                "action": {"run": {"path": "sh", "args": ["-c", "echo hi > /tmp/out"]}},
                "env": {"A": "1"}, "result_file": "/tmp/out"})
        );
        request.into_spec().expect("a valid task");
    }

    #[test]
    fn tasks_render() {
        let spec = task_create(&submit_args(&["--", "echo", "hi"]))
            .expect("builds")
            .into_spec()
            .expect("valid")
            .1;
        let name = |s: &str| Name::parse("id", s).expect("valid");
        let pending = Task::new(name("t1"), spec.clone(), Timestamp(1_000));
        let cancelled = Task::new(name("t2"), spec, Timestamp(1_000))
            .failed_with("cancelled", Timestamp(2_000))
            .expect("a pending task can fail");
        assert_eq!(
            render_tasks(&[pending, cancelled.clone()], Timestamp(61_000)),
            "\
ID  STATE      CELL  DOMAIN   CREATED  OUTCOME
t1  PENDING    -     default  1m ago   -
t2  COMPLETED  -     default  1m ago   failed: cancelled
"
        );
        assert_eq!(
            render_task(&cancelled, Timestamp(61_000)),
            "\
task t2
  state       COMPLETED
  outcome     failed: cancelled
  domain      default
  command     echo hi
  rootfs      preloaded:host
  resources   128 MB memory, 1024 MB disk
  cell        -
  created     1970-01-01 00:00:01 UTC (1m ago)
  updated     59s ago
"
        );
    }
}
