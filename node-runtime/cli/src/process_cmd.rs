//! `rauha run|ps|exec|logs|stop|delete|wait`.

use std::io::Write;

use rauha_api::v1;
use tokio_stream::StreamExt;

use crate::connect::{status, Clients};
use crate::exit_code;
use crate::render::{self, print_json};
use crate::table::{short, Table};

pub fn spec(
    args: Vec<String>,
    env: Vec<String>,
    cwd: Option<String>,
) -> anyhow::Result<v1::ProcessSpec> {
    Ok(v1::ProcessSpec {
        args,
        env: crate::policy_source::parse_env(&env)?,
        cwd: cwd.unwrap_or_default(),
    })
}

pub async fn run(
    c: &mut Clients,
    zone: String,
    spec: v1::ProcessSpec,
    json: bool,
) -> anyhow::Result<i32> {
    let p = c
        .processes
        .run(v1::RunRequest {
            zone,
            spec: Some(spec),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        print_json(&render::process(&p))?;
    } else {
        println!("{}", p.id);
    }
    Ok(0)
}

pub async fn ps(c: &mut Clients, zone: Option<String>, json: bool) -> anyhow::Result<i32> {
    let list = c
        .processes
        .ps(v1::PsRequest {
            zone: zone.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .processes;
    if json {
        print_json(&serde_json::Value::Array(
            list.iter().map(render::process).collect(),
        ))?;
        return Ok(0);
    }
    let mut t = Table::new(&["ID", "ZONE", "PID", "STATE", "EXIT", "COMMAND"]);
    for p in &list {
        let exit = if p.signal != 0 {
            format!("signal {}", p.signal)
        } else if p.has_exit_code {
            p.exit_code.to_string()
        } else {
            "-".into()
        };
        t.row(vec![
            short(&p.id),
            p.zone_name.clone(),
            p.pid.to_string(),
            p.state.clone(),
            exit,
            p.args.join(" "),
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

pub async fn exec(c: &mut Clients, zone: String, spec: v1::ProcessSpec) -> anyhow::Result<i32> {
    let mut stream = c
        .processes
        .exec(v1::ExecRequest {
            zone,
            spec: Some(spec),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut code = i32::from(exit_code::RAUHA_ERROR);
    while let Some(event) = stream.next().await {
        match event.map_err(status)?.event {
            Some(v1::exec_event::Event::Output(o)) => {
                if o.stream == 2 {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&o.data)?;
                    err.flush()?;
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&o.data)?;
                    out.flush()?;
                }
            }
            Some(v1::exec_event::Event::Exited(p)) => {
                code = i32::from(exit_code::for_process(&p).unwrap_or(exit_code::RAUHA_ERROR))
            }
            Some(v1::exec_event::Event::Started(_)) | None => {}
        }
    }
    Ok(code)
}

pub async fn logs(c: &mut Clients, id: String) -> anyhow::Result<i32> {
    let l = c
        .processes
        .logs(v1::ProcessRef { id })
        .await
        .map_err(status)?
        .into_inner();
    std::io::stdout().write_all(&l.stdout)?;
    std::io::stderr().write_all(&l.stderr)?;
    if l.truncated {
        eprintln!(
            "rauha: output was longer than the zone's max_output; the rest was counted, not kept"
        );
    }
    Ok(0)
}

pub async fn stop(c: &mut Clients, id: String, grace: u32, json: bool) -> anyhow::Result<i32> {
    let p = c
        .processes
        .stop(v1::StopRequest {
            id,
            grace_seconds: grace,
        })
        .await
        .map_err(status)?
        .into_inner();
    print_one(&p, json)?;
    Ok(0)
}

pub async fn delete(c: &mut Clients, id: String) -> anyhow::Result<i32> {
    c.processes
        .delete(v1::ProcessRef { id: id.clone() })
        .await
        .map_err(status)?;
    eprintln!("process {id} deleted");
    Ok(0)
}

pub async fn wait(c: &mut Clients, id: String, json: bool) -> anyhow::Result<i32> {
    let p = c
        .processes
        .wait(v1::ProcessRef { id })
        .await
        .map_err(status)?
        .into_inner();
    print_one(&p, json)?;
    Ok(i32::from(
        exit_code::for_process(&p).unwrap_or(exit_code::RAUHA_ERROR),
    ))
}

fn print_one(p: &v1::Process, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&render::process(p))
    } else {
        let exit = if p.has_exit_code {
            format!(" (exit {})", p.exit_code)
        } else {
            String::new()
        };
        println!("{} {}{exit}", p.id, p.state);
        Ok(())
    }
}
