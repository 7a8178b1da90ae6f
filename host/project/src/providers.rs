//! The providers catalogue a command runs with: sluice's built-in one,
//! then Nango's own when the project has it installed (the `nango` npm
//! package brings `@nangohq/providers`, whose `providers.yaml` is the
//! original's whole catalogue, the one its CLI and test harness use),
//! then a file given with `--providers`. sluice ships no copy of the
//! original's; it reads the one a project already has.

use std::path::{Path, PathBuf};

use sluice_runtime::providers::{ProviderCatalog, ProviderError};

/// Where an installed `@nangohq/providers` keeps its catalogue, looked
/// for as Node resolves a package: in `dir`'s `node_modules`, then its
/// parents' (directly, or under `nango`'s own `node_modules`).
pub fn installed(dir: &Path) -> Option<PathBuf> {
    let start = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    start.ancestors().find_map(|d| {
        [
            d.join("node_modules/@nangohq/providers/providers.yaml"),
            d.join("node_modules/nango/node_modules/@nangohq/providers/providers.yaml"),
        ]
        .into_iter()
        .find(|p| p.is_file())
    })
}

/// The catalogue for a command in project folder `dir`: the built-in
/// one, the installed original's (see [`installed`]), and `explicit`
/// over both. Says on `progress` (`--debug`) which files it read.
pub fn catalog(
    dir: &Path,
    explicit: Option<&Path>,
    progress: &mut dyn std::io::Write,
) -> Result<ProviderCatalog, ProviderError> {
    let mut providers = ProviderCatalog::builtin()?;
    if let Some(found) = installed(dir) {
        crate::debug::say(progress, || {
            format!("providers: the installed catalogue {}", found.display())
        });
        providers.extend(ProviderCatalog::from_file(&found)?);
    }
    if let Some(p) = explicit {
        crate::debug::say(progress, || format!("providers: {}", p.display()));
        providers.extend(ProviderCatalog::from_file(p)?);
    }
    Ok(providers)
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
        let catalog = catalog(&project, None, &mut sink).unwrap();
        assert!(catalog.get("acme").is_some() && catalog.get("github").is_some());
        assert!(catalog.get("other").is_none());
    }
}
