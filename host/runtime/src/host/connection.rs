//! `nango:scripts/connection`: connection, metadata, environment, other scripts.

use std::sync::Arc;

use serde_json::Value;

use super::HostState;
use crate::bindings::connection::{self, EnvVar, ScriptInfo};
use crate::bindings::types::NangoError;
use crate::connection::{Connection, ConnectionError};
use crate::exec::{Budget, Call, Execution};
use crate::proxy::nango_error;
use crate::records::ConnectionRef;

pub(crate) fn store_error(e: ConnectionError) -> NangoError {
    let code = match &e {
        ConnectionError::NotFound { .. } => "unknown_connection",
        ConnectionError::InvalidMetadata(_) => "invalid_metadata",
        ConnectionError::MetadataTooLarge { .. } => "payload_too_large",
        ConnectionError::Backend(_) => "connection_store_error",
        ConnectionError::Refused { code, message } => return nango_error(code, message.clone()),
    };
    nango_error(code, e.to_string())
}

impl HostState {
    /// A connection, fetched once per execution until metadata changes or a
    /// 401 invalidates it.
    pub(crate) async fn connection(
        &mut self,
        pck: &str,
        cid: &str,
    ) -> Result<Connection, NangoError> {
        let key = (pck.to_string(), cid.to_string());
        if let Some(c) = self.connection_cache.get(&key) {
            return Ok(c.clone());
        }
        let c = self
            .services
            .connections
            .get(pck, cid)
            .await
            .map_err(store_error)?;
        self.connection_cache.insert(key, c.clone());
        Ok(c)
    }

    pub(crate) fn forget_connection(&mut self, pck: &str, cid: &str) {
        self.connection_cache
            .remove(&(pck.to_string(), cid.to_string()));
    }

    fn parse_metadata(&self, json: &[u8]) -> Result<serde_json::Map<String, Value>, NangoError> {
        self.check_payload("the metadata", json.len())?;
        match serde_json::from_slice(json) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(nango_error(
                "invalid_metadata",
                format!("metadata must be a JSON object, got {other}"),
            )),
            Err(e) => Err(nango_error(
                "invalid_metadata",
                format!("metadata is not JSON: {e}"),
            )),
        }
    }
}

impl HostState {
    /// An answer the host read from a store and serialised, paid for by
    /// its size (and a call's flat cost) as the call returns.
    fn charged(&mut self, answer: Result<Vec<u8>, NangoError>) -> Result<Vec<u8>, NangoError> {
        let size = answer.as_ref().map_or(0, Vec::len);
        self.charge(crate::locks::CALL_WORK_BYTES + size);
        answer
    }
}

impl connection::Host for HostState {
    fn info(&mut self) -> wasmtime::Result<ScriptInfo> {
        let provider = self.provider.clone();
        Ok(ScriptInfo {
            connection_id: self.exec.connection.connection_id.clone(),
            provider_config_key: self.exec.connection.provider_config_key.clone(),
            provider,
            environment_name: self.services.environment.name.clone(),
            activity_log_id: self.exec.activity_log_id.clone(),
            script_name: self.exec.script_name.clone(),
            replaying: self.services.upstream.replaying(),
        })
    }

    async fn get_connection(
        &mut self,
        pck: Option<String>,
        cid: Option<String>,
    ) -> wasmtime::Result<Result<Vec<u8>, NangoError>> {
        let pck = pck.unwrap_or_else(|| self.exec.connection.provider_config_key.clone());
        let cid = cid.unwrap_or_else(|| self.exec.connection.connection_id.clone());
        let found = self
            .services
            .connections
            .script_view(&pck, &cid)
            .await
            .map(|v| v.to_string().into())
            .map_err(store_error);
        Ok(self.charged(found))
    }

    async fn get_connection_with(
        &mut self,
        pck: Option<String>,
        cid: Option<String>,
        force_refresh: bool,
        refresh_token: bool,
    ) -> wasmtime::Result<Result<Vec<u8>, NangoError>> {
        let pck = pck.unwrap_or_else(|| self.exec.connection.provider_config_key.clone());
        let cid = cid.unwrap_or_else(|| self.exec.connection.connection_id.clone());
        if force_refresh {
            // Requests of this execution take the new token.
            self.forget_connection(&pck, &cid);
        }
        let found = self
            .services
            .connections
            .script_view_with(&pck, &cid, force_refresh, refresh_token)
            .await
            .map(|v| v.to_string().into())
            .map_err(store_error);
        Ok(self.charged(found))
    }

    async fn get_metadata(&mut self) -> wasmtime::Result<Result<Vec<u8>, NangoError>> {
        let me = &self.exec.connection;
        let found = self
            .services
            .connections
            .metadata(&me.provider_config_key, &me.connection_id)
            .await
            .map(|v| v.to_string().into())
            .map_err(store_error);
        Ok(self.charged(found))
    }

    async fn set_metadata(
        &mut self,
        metadata: Vec<u8>,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        let me = self.exec.connection.clone();
        // Parsed and stored: paid for by its size.
        self.charge(crate::locks::CALL_WORK_BYTES + metadata.len());
        let result = match self.parse_metadata(&metadata) {
            Ok(m) => self
                .services
                .connections
                .set_metadata(&me.provider_config_key, &me.connection_id, Value::Object(m))
                .await
                .map_err(store_error),
            Err(e) => Err(e),
        };
        self.forget_connection(&me.provider_config_key, &me.connection_id);
        Ok(result)
    }

    async fn update_metadata(
        &mut self,
        metadata: Vec<u8>,
    ) -> wasmtime::Result<Result<(), NangoError>> {
        let me = self.exec.connection.clone();
        // Parsed and stored: paid for by its size.
        self.charge(crate::locks::CALL_WORK_BYTES + metadata.len());
        let result = match self.parse_metadata(&metadata) {
            Ok(m) => self
                .services
                .connections
                .update_metadata(
                    &me.provider_config_key,
                    &me.connection_id,
                    m,
                    self.limits().max_payload_bytes,
                )
                .await
                .map_err(store_error),
            Err(e) => Err(e),
        };
        self.forget_connection(&me.provider_config_key, &me.connection_id);
        Ok(result)
    }

    async fn get_environment_variables(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<EnvVar>, NangoError>> {
        Ok(Ok(self
            .services
            .environment
            .variables
            .iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()))
    }

    async fn get_webhook_url(&mut self) -> wasmtime::Result<Result<Option<String>, NangoError>> {
        Ok(Ok(self.services.environment.webhook_base_url.as_ref().map(
            |base| {
                format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    self.exec.connection.provider_config_key
                )
            },
        )))
    }

    async fn get_integration(
        &mut self,
        includes: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<u8>, NangoError>> {
        let me = self.exec.connection.clone();
        let with_credentials = includes.iter().any(|i| i == "credentials");
        let found = self
            .services
            .connections
            .integration(&me.provider_config_key, &me.connection_id, with_credentials)
            .await
            .map_err(store_error);
        let mut view = match found {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if includes.iter().any(|i| i == "webhook")
            && let Some(map) = view.as_object_mut()
        {
            let url = self
                .services
                .environment
                .webhook_base_url
                .as_ref()
                .map(|base| format!("{}/{}", base.trim_end_matches('/'), me.provider_config_key));
            map.insert("webhook_url".into(), url.into());
        }
        Ok(self.charged(Ok(view.to_string().into_bytes())))
    }

    fn try_acquire_lock(
        &mut self,
        key: String,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<bool, NangoError>> {
        // Paid for as other calls are: a script asking in a loop spends
        // its CPU budget on it.
        self.charge(crate::locks::CALL_WORK_BYTES + key.len());
        let ttl = std::time::Duration::from_millis(ttl_ms);
        Ok(self
            .locks
            .try_acquire(&key, ttl)
            .map_err(|e| nango_error(e.code(), e.to_string())))
    }

    fn release_lock(&mut self, key: String) -> wasmtime::Result<Result<bool, NangoError>> {
        self.charge(crate::locks::CALL_WORK_BYTES + key.len());
        Ok(Ok(self.locks.release(&key)))
    }

    fn release_all_locks(&mut self) -> wasmtime::Result<()> {
        self.charge(crate::locks::CALL_WORK_BYTES);
        self.locks.release_all();
        Ok(())
    }

    async fn trigger_sync(&mut self, body: Vec<u8>) -> wasmtime::Result<Result<(), NangoError>> {
        Ok(self.sync_control("triggerSync", body).await)
    }

    async fn start_sync(&mut self, body: Vec<u8>) -> wasmtime::Result<Result<(), NangoError>> {
        Ok(self.sync_control("startSync", body).await)
    }

    async fn trigger_action(
        &mut self,
        pck: String,
        cid: String,
        action_name: String,
        input: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, NangoError>> {
        // The linker shadows this import with `trigger_action_import`, which
        // lends the action the caller's fuel; without fuel metering this is
        // the same call.
        Ok(self
            .trigger_action_within(pck, cid, action_name, input, None)
            .await
            .0)
    }
}

impl HostState {
    /// `triggerSync` or `startSync` with its API body, through the
    /// server's [`crate::exec::SyncControl`]; logged and not run without
    /// one.
    async fn sync_control(&mut self, what: &str, body: Vec<u8>) -> Result<(), NangoError> {
        self.check_payload(&format!("the {what} request"), body.len())?;
        let Some(control) = self.services.syncs.clone() else {
            self.push_log(crate::exec::LogEntry::internal(
                crate::exec::LogLevel::Info,
                format!(
                    "{what}({}): not run here; only a server runs other syncs",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(500)
                        .collect::<String>()
                ),
            ));
            return Ok(());
        };
        let result = if what == "triggerSync" {
            control.trigger(&body).await
        } else {
            control.start(&body).await
        };
        result.map_err(|e| NangoError {
            code: e.code,
            message: e.message,
            payload: Some(
                serde_json::json!({ "status": e.status })
                    .to_string()
                    .into_bytes(),
            ),
        })
    }
}

/// `trigger-action` with the store at hand: the action runs within what its
/// caller has left (deadline and fuel), and the fuel it burns is taken from
/// the caller.
pub(crate) fn add_trigger_action(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut connection = linker.instance("nango:scripts/connection@0.2.0")?;
    connection.func_wrap_async(
        "trigger-action",
        |mut store: wasmtime::StoreContextMut<'_, HostState>,
         (pck, cid, name, input): (String, String, String, Option<Vec<u8>>)| {
            Box::new(async move {
                let left = store.get_fuel().ok();
                let (result, burnt) = store
                    .data_mut()
                    .trigger_action_within(pck, cid, name, input, left)
                    .await;
                if let Some(left) = left {
                    store.set_fuel(left.saturating_sub(burnt))?;
                }
                // The action ran within this execution's deadline: past
                // it, this one ends here too (its guest would otherwise
                // go on until it next yields).
                if std::time::Instant::now() >= store.data().deadline {
                    return Err(wasmtime::Error::new(crate::exec::DeadlinePassed));
                }
                Ok((result,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl HostState {
    /// Runs the action `triggerAction` names within this execution's
    /// deadline and `fuel` (what the caller has left, when metered);
    /// returns its result and the fuel it used.
    pub(crate) async fn trigger_action_within(
        &mut self,
        pck: String,
        cid: String,
        action_name: String,
        input: Option<Vec<u8>>,
        fuel: Option<u64>,
    ) -> (Result<Option<Vec<u8>>, NangoError>, u64) {
        // Parsed (validated, and `{}` told apart) by the action's run.
        let size = input.as_ref().map_or(0, Vec::len);
        if let Err(e) = self.check_payload("the triggerAction input", size) {
            return (Err(e), 0);
        }
        self.charge(size);
        let max_depth = self.limits().max_trigger_depth;
        if self.exec.depth >= max_depth {
            return (
                Err(nango_error(
                    "trigger_depth_exceeded",
                    format!("triggerAction may nest at most {max_depth} levels"),
                )),
                0,
            );
        }
        let Some(script) = self.services.scripts.action(&pck, &action_name) else {
            // A replay (`sluice test`) has no other script to run, as the
            // original's harness has none.
            let message = if self.services.upstream.recordings().is_some() {
                format!(
                    "triggerAction of `{action_name}` cannot run while recorded responses are replayed (`sluice test`, as the original's test harness); a dry run or the server runs it"
                )
            } else {
                format!("integration `{pck}` has no action `{action_name}`")
            };
            return (Err(nango_error("unknown_action", message)), 0);
        };
        // A connection that does not exist is refused before the action
        // runs (and is charged and logged), as the original's API does.
        if let Err(e) = self.connection(&pck, &cid).await {
            return (Err(e), 0);
        }
        let Ok(input) = input.map(String::from_utf8).transpose() else {
            return (
                Err(nango_error(
                    "invalid_action_input",
                    "triggerAction: the input is not UTF-8 JSON",
                )),
                0,
            );
        };
        let mut exec = Execution::new(
            action_name.clone(),
            ConnectionRef {
                provider_config_key: pck,
                connection_id: cid,
            },
            Call::Action { input },
        );
        exec.depth = self.exec.depth + 1;
        // An action of the same project: the same format.
        exec.zero_yaml = self.exec.zero_yaml;
        exec.within = Some(Budget {
            deadline: self.deadline,
            fuel,
        });
        let runtime = self.runtime.clone();
        let services = Arc::clone(&self.services);
        let report = Box::pin(runtime.execute(&script, exec, services)).await;
        let burnt = report.fuel_consumed;
        // Its connection's secrets are the caller's to redact too: its
        // failure, passed on, may quote them.
        self.secrets.extend(&report.secrets);
        // Its log lines (its requests among them) are the caller's too,
        // each marked with the action, within the caller's cap: the
        // caller's execution is the one the history keeps.
        let tag = format!("[action {action_name}] ");
        for mut entry in report.logs {
            entry.message.insert_str(0, &tag);
            self.push_log(entry);
        }
        self.logs_dropped += report.logs_dropped;
        let result = match report.outcome {
            Ok(output) => Ok(output.map(|v| v.to_string().into())),
            Err(e) => {
                let failure = e.to_failure();
                // An ActionError's payload is passed on as it was thrown: a
                // caller that lets it through fails with it as if it had
                // thrown it itself.
                if failure.error_type == "action_script_runtime_error" {
                    Err(NangoError {
                        code: failure.error_type.clone(),
                        message: format!("action `{action_name}` failed with an ActionError"),
                        payload: serde_json::to_vec(&failure.payload).ok(),
                    })
                } else {
                    Err(NangoError {
                        code: failure.error_type.clone(),
                        message: format!("action `{action_name}` failed: {e}"),
                        payload: serde_json::to_vec(&failure).ok(),
                    })
                }
            }
        };
        (result, burnt)
    }
}
