use rauha_api::v1;
use rauha_e2e::{ready, Daemon};

#[tokio::test]
async fn grpc_sandbox_smoke() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mut c = d.sandbox_client().await;
    let r = c
        .run_sandbox(v1::SandboxRequest {
            spec: Some(v1::ProcessSpec {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out; echo err >&2; hostname; cat /etc/shadow; ps; exit 3".into(),
                ],
                env: vec![],
                cwd: String::new(),
            }),
            ..Default::default()
        })
        .await;
    eprintln!("{r:#?}");
    eprintln!("{}", d.log());
}
