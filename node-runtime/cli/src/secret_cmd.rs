//! `rauha secret set|list|rm`: values go to rauhad and never come back.

use std::io::{self, Read, Write};

use anyhow::bail;
use clap::Subcommand;
use rauha_api::v1;

use crate::connect::Connection;
use crate::json_view::print_json;
use crate::table::Table;
use crate::timestamp::format_utc;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret; its value is read from stdin (a final newline is
    /// dropped).
    Set { name: String },
    /// List secrets: names, sizes and times, never values.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm { name: String },
}

pub async fn run(command: SecretCommand, addr: &str) -> anyhow::Result<u8> {
    let value = match &command {
        SecretCommand::Set { .. } => Some(read_value(io::stdin().lock())?),
        _ => None,
    };
    let mut secrets = Connection::open(addr).await?.secrets();
    match command {
        SecretCommand::Set { name } => {
            let info = secrets
                .set(v1::SetSecretRequest {
                    name,
                    value: value.unwrap_or_default(),
                })
                .await?
                .into_inner();
            writeln!(
                io::stderr(),
                "stored secret {} ({} bytes)",
                info.name,
                info.size
            )?;
        }
        SecretCommand::List { json } => {
            let list = secrets
                .list(v1::ListSecretsRequest {})
                .await?
                .into_inner()
                .secrets;
            if json {
                let v: Vec<_> =
                    list.iter().map(|s| serde_json::json!({"name": s.name, "size": s.size, "updated_ms": s.updated_ms})).collect();
                print_json(&v)?;
            } else {
                let mut table = Table::new(&["NAME", "SIZE", "UPDATED"]);
                for s in &list {
                    table.row([s.name.clone(), s.size.to_string(), format_utc(s.updated_ms)]);
                }
                table.write_to(&mut io::stdout().lock())?;
            }
        }
        SecretCommand::Rm { name } => {
            secrets
                .remove(v1::SecretName { name: name.clone() })
                .await?;
            writeln!(io::stderr(), "removed secret {name}")?;
        }
    }
    Ok(0)
}

/// The value from stdin, without one trailing newline (`echo x | rauha
/// secret set` stores `x`).
fn read_value(mut input: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut value = Vec::new();
    input.read_to_end(&mut value)?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("no value on stdin; pipe it in, e.g. `printf %s \"$TOKEN\" | rauha secret set NAME`");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(read_value(&b"sk-123\n"[..]).expect("value"), b"sk-123");
        assert_eq!(read_value(&b"a\n\n"[..]).expect("value"), b"a\n");
        assert!(read_value(&b""[..]).is_err());
    }
}
