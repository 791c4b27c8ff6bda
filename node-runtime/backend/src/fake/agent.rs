//! The fake zone's agent: what a scripted process does when it starts,
//! and the agent protocol served over one in-memory connection.

use super::*;

pub(super) fn start(agent: &mut Agent, spec: &SpawnSpec) -> Result<Vec<Message>, String> {
    let program = spec.args.first().map(String::as_str).unwrap_or_default();
    let words = spec.args.get(1..).unwrap_or_default().join(" ");
    let id = spec.id.clone();
    // One chunk per stream and process: each starts its stream.
    let out = |stream, data: String| Message::Output {
        id: id.clone(),
        stream,
        offset: 0,
        data: data.into_bytes(),
    };
    let exit = |code: Option<i32>, signal: Option<i32>| Message::Exited {
        id: id.clone(),
        status: ExitStatus {
            code,
            signal,
            deadline: false,
        },
    };
    Ok(match program {
        "echo" => vec![
            out(Stream::Stdout, format!("{words}\n")),
            exit(Some(0), None),
        ],
        "warn" => vec![
            out(Stream::Stderr, format!("{words}\n")),
            exit(Some(0), None),
        ],
        "exit" => vec![exit(Some(words.trim().parse().unwrap_or(1)), None)],
        "oom" => {
            agent.usage.oom_kills += 1;
            vec![exit(None, Some(9))]
        }
        "sleep" | "cat" => Vec::new(),
        other => return Err(format!("{other:?} is not found in the zone")),
    })
}

/// Applies what the agent says about a process to its books.
pub(super) fn record(agent: &mut Agent, msg: &Message) {
    if let Message::Exited { id, status } = msg {
        agent.running.remove(id);
        agent.exited.push((id.clone(), *status));
    }
}

/// Serves one connection to a zone's agent.
pub(super) async fn serve(zone: Arc<FakeZone>, stream: tokio::io::DuplexStream) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut pushed = zone.pushed.subscribe();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            n = reader.read(&mut chunk) => {
                let Ok(n) = n else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some(req)) = frame::decode_from::<Request>(&mut buf) {
                    for msg in answer(&zone, req) {
                        let Ok(bytes) = frame::encode(&msg) else { return };
                        if writer.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                }
            }
            msg = pushed.recv() => {
                let Ok(msg) = msg else { return };
                if matches!(msg, Message::Error { .. }) && !lock(&zone.agent).alive {
                    return; // the agent died: the connection closes
                }
                let Ok(bytes) = frame::encode(&msg) else { return };
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The agent's direct answers to a request; pushed messages (output,
/// exits) go to every connection.
pub(super) fn answer(zone: &FakeZone, req: Request) -> Vec<Message> {
    let mut agent = lock(&zone.agent);
    let mut push = Vec::new();
    let direct = match req {
        Request::Hello { .. } => vec![Message::Hello {
            version: PROTOCOL_VERSION,
            running: agent.running.keys().cloned().collect(),
            exited: agent.exited.clone(),
        }],
        Request::Spawn(spec) => match start(&mut agent, &spec) {
            Ok(then) => {
                agent.next_pid += 1;
                let pid = agent.next_pid + 1;
                let command = spec.args.join(" ");
                agent
                    .running
                    .insert(spec.id.clone(), (pid, command, Vec::new()));
                push = then;
                vec![Message::Spawned { id: spec.id, pid }]
            }
            Err(error) => vec![Message::SpawnFailed { id: spec.id, error }],
        },
        Request::Signal { id, signal } => {
            if agent.running.contains_key(&id) {
                push.push(Message::Exited {
                    id,
                    status: ExitStatus {
                        code: None,
                        signal: Some(signal),
                        deadline: false,
                    },
                });
            }
            Vec::new()
        }
        Request::SignalAll { signal } | Request::SignalRoot { signal, .. } => {
            for id in agent.running.keys() {
                push.push(Message::Exited {
                    id: id.clone(),
                    status: ExitStatus {
                        code: None,
                        signal: Some(signal),
                        deadline: false,
                    },
                });
            }
            Vec::new()
        }
        Request::List { request } => {
            let mut list = vec![ZoneProcess {
                pid: 1,
                ppid: 0,
                command: "rauha-guest-agent zone".into(),
                id: None,
            }];
            for (id, (pid, command, _)) in &agent.running {
                list.push(ZoneProcess {
                    pid: *pid,
                    ppid: 1,
                    command: command.clone(),
                    id: Some(id.clone()),
                });
            }
            list.sort_by_key(|p| p.pid);
            vec![Message::Processes { request, list }]
        }
        Request::Forget { id } => {
            agent.exited.retain(|(e, _)| *e != id);
            Vec::new()
        }
        // The fake keeps nothing it sent: nothing to drop.
        Request::Ack { .. } => Vec::new(),
        Request::Stdin { id, data } => {
            if let Some((_, _, input)) = agent.running.get_mut(&id) {
                input.extend_from_slice(&data);
            }
            Vec::new()
        }
        Request::CloseStdin { id } => {
            if let Some((_, _, input)) = agent.running.get(&id) {
                push.push(Message::Output {
                    id: id.clone(),
                    stream: Stream::Stdout,
                    offset: 0,
                    data: input.clone(),
                });
                push.push(Message::Exited {
                    id,
                    status: ExitStatus {
                        code: Some(0),
                        signal: None,
                        deadline: false,
                    },
                });
            }
            Vec::new()
        }
        Request::UpdateHardening(_) | Request::Resize { .. } => Vec::new(),
    };
    for msg in &push {
        record(&mut agent, msg);
    }
    drop(agent);
    for msg in push {
        let _ = zone.pushed.send(msg);
    }
    direct
}
