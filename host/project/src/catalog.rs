//! The scripts of a project as they run: nango.yaml and one loaded script
//! per declared name, and what nango.yaml says each execution is (models,
//! `track_deletes`, validation). The CLI's dry run and test replay, the
//! server's deployments and the test harness all build executions here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sluice_nango_yaml::{self as yaml, NangoYaml};
use sluice_runtime::exec::{ScriptDirectory, ScriptValidation, SyncRun};
use sluice_runtime::records::ConnectionRef;
use sluice_runtime::validate::Validation;
use sluice_runtime::{Call, Execution, Script, ScriptKind};

/// Loaded scripts by integration and name, with their nango.yaml.
pub struct Catalog {
    pub config: NangoYaml,
    /// By integration, name and kind: a sync and an action may share a name.
    scripts: BTreeMap<(String, String, ScriptKind), Arc<Script>>,
    /// The models' JSON schema, checked leniently (warnings) and strictly.
    lenient: Arc<Validation>,
    strict: Arc<Validation>,
    /// A zero-yaml project's models by integration (lenient, strict): each
    /// integration's scripts declare their own, and two integrations may
    /// each have a model of the same name.
    by_integration: BTreeMap<String, (Arc<Validation>, Arc<Validation>)>,
    /// Those models' schemas, by integration (`definitions` by name).
    own_definitions: BTreeMap<String, serde_json::Map<String, Value>>,
    /// The models' JSON schema (`{"$schema", "definitions"}`) as the API
    /// documents them: nango.yaml's, or a zero-yaml project's from its
    /// definitions.
    schema: Value,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("scripts", &self.scripts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// `scripts` are `(integration, name, script)`.
    pub fn new(
        config: NangoYaml,
        scripts: impl IntoIterator<Item = (String, String, Arc<Script>)>,
    ) -> Self {
        let schema = yaml::generate::json_schema(&config, "sluice");
        Self {
            lenient: Arc::new(Validation::new(&schema, false)),
            strict: Arc::new(Validation::new(&schema, true)),
            schema,
            by_integration: BTreeMap::new(),
            own_definitions: BTreeMap::new(),
            config,
            scripts: scripts
                .into_iter()
                .map(|(pck, name, s)| ((pck, name, s.kind()), s))
                .collect(),
        }
    }

    /// The models' JSON schema (`definitions` by model name), for the
    /// documents the API serves (`/scripts/config`, `/openapi.json`).
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Adds a zero-yaml project's model schemas, from the `json_schema`
    /// of each script in its `.nango/nango.json` definitions: to what
    /// [`Catalog::schema`] documents (the first schema of a name is kept),
    /// and to what its executions validate, as the original checks action
    /// input and output and saved records (ajv, warnings unless strict),
    /// each integration against its own models.
    pub fn with_definitions(mut self, definitions: &[Value]) -> Self {
        let mut models = self.schema["definitions"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for integration in definitions {
            let mut own = serde_json::Map::new();
            let scripts = ["syncs", "actions", "onEventScripts"]
                .into_iter()
                .filter_map(|kind| integration.get(kind)?.as_array())
                .flatten();
            for script in scripts {
                let Some(defs) = script
                    .get("json_schema")
                    .and_then(|s| s.get("definitions"))
                    .and_then(Value::as_object)
                else {
                    continue;
                };
                for (name, schema) in defs {
                    models.entry(name.clone()).or_insert_with(|| schema.clone());
                    own.entry(name.clone()).or_insert_with(|| schema.clone());
                }
            }
            let Some(pck) = integration.get("providerConfigKey").and_then(Value::as_str) else {
                continue;
            };
            self.own_definitions.insert(pck.to_string(), own.clone());
            let own = serde_json::json!({ "definitions": own });
            self.by_integration.insert(
                pck.to_string(),
                (
                    Arc::new(Validation::new(&own, false)),
                    Arc::new(Validation::new(&own, true)),
                ),
            );
        }
        self.schema["definitions"] = Value::Object(models);
        self
    }

    /// A zero-yaml integration's own models (`definitions` by name): two
    /// integrations may each have a model of one name, and
    /// [`Catalog::schema`] documents the first.
    pub fn own_definitions(&self, integration: &str) -> Option<&serde_json::Map<String, Value>> {
        self.own_definitions.get(integration)
    }

    /// Whether the integration's scripts are zero-yaml ones (their models
    /// came from their own definitions).
    pub fn is_zero_yaml(&self, integration: &str) -> bool {
        self.by_integration.contains_key(integration)
    }

    /// The integration's script of this name and kind.
    pub fn script(&self, integration: &str, name: &str, kind: ScriptKind) -> Option<&Arc<Script>> {
        self.scripts
            .get(&(integration.to_string(), name.to_string(), kind))
    }

    /// Every script as `(integration, name, script)`.
    pub fn scripts(&self) -> impl Iterator<Item = (&str, &str, &Arc<Script>)> {
        self.scripts
            .iter()
            .map(|((pck, name, _), s)| (pck.as_str(), name.as_str(), s))
    }

    pub fn sync_config(&self, integration: &str, name: &str) -> Option<&yaml::SyncConfig> {
        self.config.integration(integration)?.sync(name)
    }

    pub fn action_config(&self, integration: &str, name: &str) -> Option<&yaml::ActionConfig> {
        self.config.integration(integration)?.action(name)
    }

    /// What a sync run of `name` knows from nango.yaml: its models and
    /// `track_deletes` (a script nango.yaml does not declare as a sync may
    /// save any model).
    pub fn sync_run(&self, integration: &str, name: &str, variant: &str) -> SyncRun {
        let sync = self.sync_config(integration, name);
        SyncRun {
            variant: variant.to_string(),
            models: sync.map(|s| s.output.clone()),
            track_deletes: sync.is_some_and(|s| s.track_deletes),
            ..SyncRun::default()
        }
    }

    /// Records and action input/output checks of `name`; violations are
    /// errors when `strict`, warnings otherwise.
    pub fn validation(&self, integration: &str, name: &str, strict: bool) -> ScriptValidation {
        let action = self.action_config(integration, name);
        let (lenient, strict_one) = self
            .by_integration
            .get(integration)
            .map_or((&self.lenient, &self.strict), |(l, s)| (l, s));
        ScriptValidation {
            schema: if strict {
                strict_one.clone()
            } else {
                lenient.clone()
            },
            input: action.and_then(|a| a.input.clone()),
            output: action.and_then(|a| a.output.first().cloned()),
        }
    }

    /// An execution of script `name` of the connection's integration, with
    /// what nango.yaml says of it (a sync's run is filled in for the base
    /// variant; callers set its job, dates and variant).
    pub fn execution(
        &self,
        name: &str,
        connection: ConnectionRef,
        call: Call,
        strict: bool,
    ) -> Execution {
        let pck = connection.provider_config_key.clone();
        let mut exec = Execution::new(name, connection, call);
        exec.sync = self.sync_run(&pck, name, "base");
        exec.validation = Some(self.validation(&pck, name, strict));
        exec.zero_yaml = self.is_zero_yaml(&pck);
        exec
    }
}

impl ScriptDirectory for Catalog {
    fn action(&self, provider_config_key: &str, name: &str) -> Option<Arc<Script>> {
        self.script(provider_config_key, name, ScriptKind::Action)
            .cloned()
    }
}
