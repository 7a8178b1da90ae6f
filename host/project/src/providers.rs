//! The providers catalogue a command runs with: sluice's built-in one,
//! then, for the names it lacks, Nango's own when the project has it
//! installed (the `nango` npm package brings `@nangohq/providers`, whose
//! `providers.yaml` is the original's whole catalogue, the one its CLI and
//! test harness use), then a file given with `--providers`, which wins
//! over both. sluice ships no copy of the original's; it reads the one a
//! project already has. `SLUICE_INSTALLED_PROVIDERS=0` turns the
//! installed one off.

use std::path::{Path, PathBuf};

use sluice_runtime::providers::{ProviderCatalog, ProviderError};

/// Where an installed `@nangohq/providers` keeps its catalogue, looked
/// for as Node resolves a package: in `dir`'s `node_modules`, then its
/// parents' (directly, under `nango`'s own `node_modules`, or beside the
/// package `nango` links to, as pnpm lays packages out).
pub fn installed(dir: &Path) -> Option<PathBuf> {
    let start = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    start.ancestors().find_map(|d| {
        let modules = d.join("node_modules");
        let beside_nango = modules
            .join("nango")
            .canonicalize()
            .ok()
            .and_then(|nango| nango.parent().map(Path::to_path_buf))
            .map(|parent| parent.join("@nangohq/providers/providers.yaml"));
        [
            Some(modules.join("@nangohq/providers/providers.yaml")),
            Some(modules.join("nango/node_modules/@nangohq/providers/providers.yaml")),
            beside_nango,
        ]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
    })
}

/// Whether the installed catalogue is to be read (`SLUICE_INSTALLED_PROVIDERS`
/// is not `0`, `false` or `off`).
pub fn installed_wanted() -> bool {
    !matches!(
        std::env::var("SLUICE_INSTALLED_PROVIDERS").as_deref(),
        Ok("0" | "false" | "off")
    )
}

/// A catalogue and what it was made of, for a line saying so.
pub struct Loaded {
    pub providers: ProviderCatalog,
    /// `N built-in, M from <file>, K from <file>`.
    pub summary: String,
}

/// The catalogue for a command in project folder `dir`: the built-in
/// one; the installed original's (see [`installed`]) for the names the
/// built-in one lacks (an unreadable one is skipped with a warning on
/// `progress`: it was not asked for); and `explicit` over both.
pub fn load(
    dir: &Path,
    explicit: Option<&Path>,
    use_installed: bool,
    progress: &mut dyn std::io::Write,
) -> Result<Loaded, ProviderError> {
    let mut providers = ProviderCatalog::builtin()?;
    let mut summary = format!("{} built-in", providers.len());
    if use_installed && let Some(found) = installed(dir) {
        match ProviderCatalog::from_file(&found) {
            Ok(theirs) => {
                let added = providers.extend_missing(theirs);
                summary.push_str(&format!(", {added} from {}", found.display()));
            }
            Err(e) => {
                let _ = writeln!(
                    progress,
                    "warning: the installed providers catalogue was not read ({e}); SLUICE_INSTALLED_PROVIDERS=0 stops looking for it"
                );
            }
        }
    }
    if let Some(p) = explicit {
        let given = ProviderCatalog::from_file(p)?;
        summary.push_str(&format!(", {} from {}", given.len(), p.display()));
        providers.extend(given);
    }
    Ok(Loaded { providers, summary })
}

/// [`load`]'s catalogue (the installed one unless
/// `SLUICE_INSTALLED_PROVIDERS=0`), saying what it read on `progress`
/// under `--debug`.
pub fn catalog(
    dir: &Path,
    explicit: Option<&Path>,
    progress: &mut dyn std::io::Write,
) -> Result<ProviderCatalog, ProviderError> {
    let loaded = load(dir, explicit, installed_wanted(), progress)?;
    crate::debug::say(progress, || format!("providers: {}", loaded.summary));
    Ok(loaded.providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_catalogue_is_found_as_node_finds_a_package() {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().join("nango-integrations");
        let deep = project.join("github/syncs");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(installed(&deep), None);
        // Under `nango`'s own node_modules (an npm that did not hoist it).
        let nested = project.join("node_modules/nango/node_modules/@nangohq/providers");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(
            nested.join("providers.yaml"),
            "acme:\n  auth_mode: API_KEY\n",
        )
        .unwrap();
        let found = installed(&deep).unwrap();
        assert!(found.ends_with("nango/node_modules/@nangohq/providers/providers.yaml"));
        // Hoisted, in a parent folder (a monorepo): the nearest wins.
        let hoisted = root.path().join("node_modules/@nangohq/providers");
        std::fs::create_dir_all(&hoisted).unwrap();
        std::fs::write(
            hoisted.join("providers.yaml"),
            "other:\n  auth_mode: NONE\n",
        )
        .unwrap();
        assert!(
            installed(&deep)
                .unwrap()
                .starts_with(project.canonicalize().unwrap())
        );
        let mut sink = Vec::new();
        let catalog = load(&project, None, true, &mut sink).unwrap().providers;
        assert!(catalog.get("acme").is_some() && catalog.get("github").is_some());
        assert!(catalog.get("other").is_none());
    }

    #[test]
    fn pnpms_layout_is_found_beside_the_linked_nango() {
        let root = tempfile::tempdir().unwrap();
        let store = root
            .path()
            .join("node_modules/.pnpm/nango@0.71.4/node_modules");
        std::fs::create_dir_all(store.join("nango")).unwrap();
        std::fs::create_dir_all(store.join("@nangohq/providers")).unwrap();
        std::fs::write(
            store.join("@nangohq/providers/providers.yaml"),
            "acme:\n  auth_mode: API_KEY\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(store.join("nango"), root.path().join("node_modules/nango"))
            .unwrap();
        let found = installed(root.path()).unwrap();
        assert!(
            found.ends_with(".pnpm/nango@0.71.4/node_modules/@nangohq/providers/providers.yaml")
        );
    }

    #[test]
    fn the_built_in_names_stay_sluices_and_the_given_file_wins_over_all() {
        let root = tempfile::tempdir().unwrap();
        let installed = root.path().join("node_modules/@nangohq/providers");
        std::fs::create_dir_all(&installed).unwrap();
        // The original's `stripe` is Stripe Connect (OAuth2); sluice's
        // built-in one takes an API key, and keeps doing so.
        std::fs::write(
            installed.join("providers.yaml"),
            "stripe:\n  auth_mode: OAUTH2\nacme:\n  auth_mode: API_KEY\n",
        )
        .unwrap();
        let mut sink = Vec::new();
        let loaded = load(root.path(), None, true, &mut sink).unwrap();
        assert_eq!(
            loaded.providers.get("stripe").unwrap().auth_mode.as_deref(),
            Some("API_KEY")
        );
        assert!(loaded.providers.get("acme").is_some());
        assert!(loaded.summary.contains("1 from"), "{}", loaded.summary);
        let given = root.path().join("mine.yaml");
        std::fs::write(
            &given,
            "stripe:\n  auth_mode: OAUTH2\nacme:\n  auth_mode: BASIC\n",
        )
        .unwrap();
        let loaded = load(root.path(), Some(&given), true, &mut sink).unwrap();
        assert_eq!(
            loaded.providers.get("stripe").unwrap().auth_mode.as_deref(),
            Some("OAUTH2")
        );
        assert_eq!(
            loaded.providers.get("acme").unwrap().auth_mode.as_deref(),
            Some("BASIC")
        );
    }

    #[test]
    fn an_unreadable_installed_catalogue_is_skipped_with_a_warning() {
        let root = tempfile::tempdir().unwrap();
        let installed = root.path().join("node_modules/@nangohq/providers");
        std::fs::create_dir_all(&installed).unwrap();
        std::fs::write(
            installed.join("providers.yaml"),
            "acme: [not, a, provider\n",
        )
        .unwrap();
        let mut sink = Vec::new();
        let loaded = load(root.path(), None, true, &mut sink).unwrap();
        assert!(loaded.providers.get("github").is_some());
        let warned = String::from_utf8(sink).unwrap();
        assert!(
            warned.contains("warning: the installed providers catalogue was not read"),
            "{warned}"
        );
    }
}
