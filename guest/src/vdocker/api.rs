//! The JSON endpoints: ping, version, info, list, inspect, kill, wait,
//! resize, exec create and inspect.

use super::http::{self, empty, error, json, Query, Req, Resp};
use crate::container::{Container, Status};
use crate::exec::{Exec, ExecConfig};
use crate::pod::Pod;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| crate::logs::timestamp(&t))
        .unwrap_or_else(|| GO_ZERO_TIME.to_string())
}

pub fn ping() -> Resp {
    let mut r = http::respond(StatusCode::OK, "text/plain; charset=utf-8", "OK");
    if let Ok(v) = "no-cache, no-store, must-revalidate".parse() {
        r.headers_mut().insert("cache-control", v);
    }
    r
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn version() -> Resp {
    let v = env!("CARGO_PKG_VERSION");
    json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "cradle vdocker"},
            "Components": [{"Name": "Engine", "Version": v, "Details": {
                "ApiVersion": super::API_VERSION, "MinAPIVersion": super::MIN_API_VERSION,
                "Os": "linux", "Arch": "amd64", "KernelVersion": kernel()}}],
            "Version": v,
            "ApiVersion": super::API_VERSION,
            "MinAPIVersion": super::MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": std::env::consts::ARCH,
            "KernelVersion": kernel(),
            "BuildTime": "",
        }),
    )
}

pub fn info(pod: &Pod) -> Resp {
    let states: Vec<Status> = pod.containers.iter().map(|c| c.state().status).collect();
    let running = states.iter().filter(|s| **s == Status::Running).count();
    json(
        StatusCode::OK,
        &json!({
            "ID": pod.config.id,
            "Name": pod.config.hostname(),
            "Containers": states.len(),
            "ContainersRunning": running,
            "ContainersPaused": 0,
            "ContainersStopped": states.len() - running,
            "Images": 0,
            "Driver": "overlay",
            "DriverStatus": [],
            "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": []},
            "MemoryLimit": false, "SwapLimit": false, "CpuCfsPeriod": false, "CpuCfsQuota": false,
            "IPv4Forwarding": false, "Debug": false, "NFd": 0, "NGoroutines": 0,
            "SystemTime": crate::logs::timestamp(&Utc::now()),
            "LoggingDriver": "cradle-ring",
            "CgroupDriver": "none",
            "CgroupVersion": "2",
            "KernelVersion": kernel(),
            "OperatingSystem": "cradle pod",
            "OSType": "linux",
            "OSVersion": "",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "MemTotal": mem_total(),
            "IndexServerAddress": "",
            "RegistryConfig": null,
            "DockerRootDir": "/cradle",
            "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": {"cradle": {"path": "cradle-init"}},
            "DefaultRuntime": "cradle",
            "Swarm": {"LocalNodeState": "inactive"},
            "LiveRestoreEnabled": false,
            "Isolation": "",
            "InitBinary": "cradle-init",
            "SecurityOptions": [],
            "Warnings": null,
        }),
    )
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn image_name(c: &Container) -> String {
    c.config
        .image
        .reference
        .clone()
        .unwrap_or_else(|| format!("cradle/{}", c.name()))
}

fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0 => "Less than a second".into(),
        1..=59 => format!("{s} seconds"),
        60..=3599 => format!("{} minutes", s / 60),
        _ => format!("{} hours", s / 3600),
    }
}

fn status_text(c: &Container) -> String {
    let st = c.state();
    let now = Utc::now();
    match st.status {
        Status::Running => format!("Up {}", human_duration(now - st.started_at.unwrap_or(now))),
        Status::Restarting => format!("Restarting ({})", st.exit_code),
        Status::Created => "Created".into(),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code,
            human_duration(now - st.finished_at.unwrap_or(now))
        ),
    }
}

pub fn list(pod: &Pod, req: &Req) -> Resp {
    let q = Query::of(req);
    let all = q.flag("all", false);
    let items: Vec<Value> = pod
        .containers
        .iter()
        .filter(|c| all || c.state().status == Status::Running)
        .map(|c| {
            json!({
                "Id": c.id,
                "Names": [format!("/{}", c.name())],
                "Image": image_name(c),
                "ImageID": "",
                "Command": c.config.process.argv().join(" "),
                "Created": c.created.timestamp(),
                "Ports": [],
                "Labels": {},
                "State": c.state().status.as_str(),
                "Status": status_text(c),
                "HostConfig": {"NetworkMode": "host"},
                "NetworkSettings": {"Networks": {}},
                "Mounts": mounts(pod),
            })
        })
        .collect();
    json(StatusCode::OK, &Value::Array(items))
}

fn mounts(pod: &Pod) -> Value {
    pod.config
        .volumes
        .iter()
        .filter_map(|v| {
            let at = v.mount_point.as_ref()?;
            Some(json!({"Type": "volume", "Name": v.name, "Source": "",
                "Destination": at, "Driver": "cradle", "Mode": "",
                "RW": !v.read_only, "Propagation": ""}))
        })
        .collect()
}

pub fn inspect(pod: &Pod, c: &Container) -> Resp {
    let st = c.state();
    let p = &c.config.process;
    let argv = p.argv();
    let exec_ids: Vec<String> = pod
        .execs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|e| e.container.id == c.id && e.state().running)
        .map(|e| e.id.clone())
        .collect();
    let addr = pod
        .addresses
        .iter()
        .find(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .unwrap_or_default();
    json(
        StatusCode::OK,
        &json!({
            "Id": c.id,
            "Created": crate::logs::timestamp(&c.created),
            "Path": argv.first().cloned().unwrap_or_default(),
            "Args": argv.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": st.status.as_str(),
                "Running": st.status == Status::Running,
                "Paused": false,
                "Restarting": st.status == Status::Restarting,
                "OOMKilled": false,
                "Dead": false,
                "Pid": st.pid,
                "ExitCode": st.exit_code,
                "Error": st.error,
                "StartedAt": rfc3339(st.started_at),
                "FinishedAt": rfc3339(st.finished_at),
            },
            "Image": image_name(c),
            "ResolvConfPath": "/etc/resolv.conf",
            "HostnamePath": "/etc/hostname",
            "HostsPath": "/etc/hosts",
            "LogPath": "",
            "Name": format!("/{}", c.name()),
            "RestartCount": st.restart_count,
            "Driver": if c.config.image.overlay { "overlay" } else { "bind" },
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": if exec_ids.is_empty() { Value::Null } else { json!(exec_ids) },
            "HostConfig": {
                "NetworkMode": "host",
                "RestartPolicy": {
                    "Name": c.restart_policy_name(),
                    "MaximumRetryCount": c.config.restart.max_restarts.unwrap_or(0),
                },
                "AutoRemove": false,
                "Privileged": false,
                "ReadonlyRootfs": false,
                "LogConfig": {"Type": "cradle-ring", "Config": {}},
            },
            "GraphDriver": {"Name": "overlay", "Data": null},
            "Mounts": mounts(pod),
            "Config": {
                "Hostname": c.hostname,
                "Domainname": "",
                "User": p.user.clone().unwrap_or_default(),
                "AttachStdin": false,
                "AttachStdout": false,
                "AttachStderr": false,
                "Tty": p.tty,
                "OpenStdin": p.open_stdin,
                "StdinOnce": false,
                "Env": c.env,
                "Cmd": p.cmd,
                "Entrypoint": if p.entrypoint.is_empty() { Value::Null } else { json!(p.entrypoint) },
                "WorkingDir": p.workdir.clone().unwrap_or_default(),
                "Image": image_name(c),
                "Labels": {"cradle.pod": pod.config.id, "cradle.critical": c.config.critical.to_string()},
            },
            "NetworkSettings": {
                "Bridge": "", "SandboxID": "", "HairpinMode": false,
                "Ports": {},
                "IPAddress": addr,
                "Networks": {},
            },
        }),
    )
}

/// Parses Docker's signal parameter: `SIGKILL`, `KILL` or a number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|_| n);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

pub fn kill(c: &Container, req: &Req) -> Resp {
    let q = Query::of(req);
    let sig = match q.get("signal").filter(|s| !s.is_empty()) {
        None => libc::SIGKILL,
        Some(s) => match parse_signal(s) {
            Some(n) => n,
            None => return error(StatusCode::BAD_REQUEST, &format!("Invalid signal: {s}")),
        },
    };
    match c.kill(sig) {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(_) => error(
            StatusCode::CONFLICT,
            &format!(
                "Cannot kill container: {}: container {} is not running",
                c.name(),
                c.id
            ),
        ),
    }
}

pub fn wait(c: Arc<Container>, req: &Req) -> Resp {
    let q = Query::of(req);
    let condition = q.get("condition").unwrap_or("not-running").to_string();
    if !matches!(
        condition.as_str(),
        "" | "not-running" | "next-exit" | "removed"
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid condition: {condition:?}"),
        );
    }
    let (resp, tx) = http::streaming(StatusCode::OK, "application/json");
    let mut w = c.watch();
    tokio::spawn(async move {
        let start = c.state();
        // not-running answers at once for a container that is not running;
        // next-exit (and a running container) wait for the next exit.
        let immediate = condition != "next-exit" && start.status != Status::Running;
        let done = |s: &crate::container::State| immediate || s.exits > start.exits;
        loop {
            let st = c.state();
            if done(&st) {
                let body = json!({"StatusCode": st.exit_code, "Error": null});
                let _ = tx.send(Bytes::from(format!("{body}\n"))).await;
                return;
            }
            tokio::select! {
                r = w.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    resp
}

fn size(req: &Req) -> Result<(u16, u16), Resp> {
    let q = Query::of(req);
    let num = |k| q.get(k).and_then(|v| v.parse::<u16>().ok());
    match (num("h"), num("w")) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "resize needs numeric h and w parameters",
        )),
    }
}

pub fn resize_container(c: &Container, req: &Req) -> Resp {
    match size(req) {
        Err(r) => r,
        Ok((h, w)) => match c.resize(h, w) {
            Ok(()) => empty(StatusCode::OK),
            Err(e) => error(StatusCode::CONFLICT, &e),
        },
    }
}

pub fn resize_exec(e: &Exec, req: &Req) -> Resp {
    match size(req) {
        Err(r) => r,
        Ok((h, w)) => match e.resize(h, w) {
            Ok(()) => empty(StatusCode::OK),
            Err(m) => error(StatusCode::CONFLICT, &m),
        },
    }
}

pub async fn exec_create(pod: &Pod, c: Arc<Container>, req: Req) -> Resp {
    let body = match http::body_bytes(req, 1 << 20).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let cfg: ExecConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid exec config: {e}"),
            )
        }
    };
    if cfg.cmd.is_empty() {
        return error(StatusCode::BAD_REQUEST, "No exec command specified");
    }
    if c.state().status != Status::Running {
        return error(
            StatusCode::CONFLICT,
            &format!("Container {} is not running", c.id),
        );
    }
    let exec = Arc::new(Exec::new(c, cfg));
    let id = exec.id.clone();
    let mut execs = pod.execs.lock().unwrap_or_else(|p| p.into_inner());
    // Keep the table bounded: forget finished execs beyond 256.
    if execs.len() >= 256 {
        execs.retain(|_, e| e.state().running || !e.state().started);
    }
    execs.insert(id.clone(), exec);
    json(StatusCode::CREATED, &json!({ "Id": id }))
}

pub fn exec_inspect(e: &Exec) -> Resp {
    let st = e.state();
    let cmd = &e.config.cmd;
    json(
        StatusCode::OK,
        &json!({
            "ID": e.id,
            "Running": st.running,
            "ExitCode": st.exit_code,
            "ProcessConfig": {
                "tty": e.config.tty,
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "arguments": cmd.iter().skip(1).collect::<Vec<_>>(),
                "privileged": e.config.privileged,
                "user": e.config.user,
            },
            "OpenStdin": e.config.attach_stdin,
            "OpenStderr": e.config.attach_stderr,
            "OpenStdout": e.config.attach_stdout,
            "CanRemove": false,
            "ContainerID": e.container.id,
            "DetachKeys": "",
            "Pid": st.pid,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGKILL"), Some(9));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("SIGBOGUS"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
