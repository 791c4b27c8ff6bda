use std::sync::Arc;

use rauha_api::v1;
use rauha_api::v1::secrets_server::Secrets;
use tonic::{Request, Response, Status};

use crate::zone::ZoneRegistry;

pub struct SecretsService {
    pub registry: Arc<ZoneRegistry>,
}

fn wire(i: crate::secrets::SecretInfo) -> v1::SecretInfo {
    v1::SecretInfo {
        name: i.name,
        updated_ms: i.updated_ms,
        size: i.size,
    }
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn set(
        &self,
        request: Request<v1::SetSecretRequest>,
    ) -> Result<Response<v1::SecretInfo>, Status> {
        let req = request.into_inner();
        Ok(Response::new(wire(
            self.registry.secrets.set(&req.name, &req.value)?,
        )))
    }

    async fn list(
        &self,
        _: Request<v1::ListSecretsRequest>,
    ) -> Result<Response<v1::ListSecretsResponse>, Status> {
        let secrets = self
            .registry
            .secrets
            .list()?
            .into_iter()
            .map(wire)
            .collect();
        Ok(Response::new(v1::ListSecretsResponse { secrets }))
    }

    async fn remove(
        &self,
        request: Request<v1::SecretName>,
    ) -> Result<Response<v1::RemoveSecretResponse>, Status> {
        self.registry.secrets.remove(&request.into_inner().name)?;
        Ok(Response::new(v1::RemoveSecretResponse {}))
    }
}
