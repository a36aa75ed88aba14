//! Reading the file: TOML, `FRESHET_<SECTION>__<KEY>` environment overrides, and paths
//! relative to the file.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, ENV_PREFIX};

impl Config {
    /// Reads `path`, applies `FRESHET_*` overrides from the process environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Parses TOML text, applies the given `FRESHET_*` variables, and validates.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        // Before the overrides: a path written in the file is relative to the file, one given
        // in the environment is relative to the working directory, like any shell argument.
        if let Some(base) = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            resolve_relative_paths(&mut table, &base);
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            apply_env_override(&mut table, &name, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                // toml appends its own "in `a.b`" line; the path above is more precise.
                let message = e.into_inner().to_string();
                let message = message.lines().next().unwrap_or_default().to_string();
                ConfigError::key(if key == "." { "config".into() } else { key }, message)
            })?;
        config.validate()?;
        Ok(config)
    }
}

/// The keys that hold file or directory paths, as (section, key); `collections[]` is handled
/// separately (its `embedding.model_dir`).
const PATH_KEYS: &[(&str, &str)] = &[
    ("server", "data_dir"),
    ("audit", "path"),
    ("audit", "checkpoint_path"),
    ("auth", "jwks_file"),
    ("auth", "public_key_pem"),
    ("schema_registry", "ca_file"),
    ("schema_registry", "client_cert_file"),
    ("schema_registry", "client_key_file"),
];

/// Makes the relative paths written in a config file relative to `base` (the file's
/// directory), so that a sidecar started from any working directory finds the same files.
/// `auth.public_key_pem` may hold the PEM text itself, which is left alone; so is anything
/// that is not a string (the type check reports it later, naming the key).
fn resolve_relative_paths(table: &mut toml::Table, base: &Path) {
    fn resolve(value: &mut toml::Value, base: &Path) {
        if let toml::Value::String(s) = value
            && !s.is_empty()
            && !s.trim_start().starts_with("-----BEGIN")
            && Path::new(s.as_str()).is_relative()
        {
            *s = lexically_normal(&base.join(s.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    }
    for (section, key) in PATH_KEYS {
        if let Some(value) = table
            .get_mut(*section)
            .and_then(toml::Value::as_table_mut)
            .and_then(|t| t.get_mut(*key))
        {
            resolve(value, base);
        }
    }
    let collections = table
        .get_mut("collections")
        .and_then(toml::Value::as_array_mut);
    for collection in collections.into_iter().flatten() {
        if let Some(value) = collection
            .get_mut("embedding")
            .and_then(|e| e.get_mut("model_dir"))
        {
            resolve(value, base);
        }
    }
}

/// `path` without `.` and with each `..` taking away the component before it (as a shell's
/// `cd` does), so that resolved paths read as plainly as they would be written.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Applies one `FRESHET_A__B__C=value` variable to the parsed table.
///
/// Segments are lower-cased; a numeric segment indexes an array (`FRESHET_COLLECTIONS__0__NAME`).
///
/// The value keeps the type of the key it replaces when there is one (so a numeric-looking
/// string stays a string); a new key is read as a TOML value if it parses as one, else as a
/// string. Keys under `kafka.properties` are always strings, as librdkafka wants.
fn apply_env_override(table: &mut toml::Table, name: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let key = path.join(".");
    if path.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::key(
            name,
            "environment override has an empty key segment",
        ));
    }
    let is_property = path.len() == 3 && path[0] == "kafka" && path[1] == "properties";
    let mut node: &mut toml::Value = {
        let first = &path[0];
        if !table.contains_key(first) {
            table.insert(first.clone(), toml::Value::Table(toml::Table::new()));
        }
        table
            .get_mut(first)
            .ok_or_else(|| ConfigError::key(&key, "cannot apply environment override"))?
    };
    for seg in &path[1..] {
        node = match node {
            toml::Value::Table(t) => {
                if !t.contains_key(seg) {
                    t.insert(seg.clone(), toml::Value::Table(toml::Table::new()));
                }
                t.get_mut(seg)
                    .ok_or_else(|| ConfigError::key(&key, "cannot apply environment override"))?
            }
            toml::Value::Array(a) => {
                let idx: usize = seg.parse().map_err(|_| {
                    ConfigError::key(&key, format!("`{seg}` is not an array index (from {name})"))
                })?;
                let len = a.len();
                a.get_mut(idx).ok_or_else(|| {
                    ConfigError::key(
                        &key,
                        format!("index {idx} is past the {len} entries in the file (from {name})"),
                    )
                })?
            }
            _ => {
                return Err(ConfigError::key(
                    &key,
                    format!("cannot descend into a non-table value (from {name})"),
                ));
            }
        };
    }
    let new_value = match node {
        _ if is_property => toml::Value::String(raw.to_string()),
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Table(t) if t.is_empty() => parse_toml_scalar(raw),
        toml::Value::Table(_) => {
            return Err(ConfigError::key(
                &key,
                format!("is a section; set its keys instead (from {name})"),
            ));
        }
        _ => parse_toml_scalar(raw),
    };
    *node = new_value;
    Ok(())
}

fn parse_toml_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
