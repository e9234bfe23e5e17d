//! `llmstreamd.toml`: serde structs that reject unknown fields, every field defaulted, then
//! validated into the settings the daemon runs with.

use llmstream::{DirectChoice, EngineChoice, ReaderConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/llmstream/llmstreamd.toml";
/// Where the daemon listens unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/llmstream/llmstreamd.sock";
/// The group whose members may connect (besides root and the daemon's own uid).
pub const DEFAULT_GROUP: &str = "llmstream";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (the message names the field).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field and its place.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: invalid value for `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted field name.
        field: String,
        /// Why.
        reason: String,
    },
}

/// A byte count written as an integer or a size string (`"16G"`, `"64K"`, `"512"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a byte count or a size string like \"16G\"")
        })? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(s) => llmstream::io::parse_size(&s)
                .and_then(|n| u64::try_from(n).ok())
                .map(Size)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not a size (examples: 512, 64K, 8M, 16G, 1T)"
                    ))
                }),
        }
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The unix socket to listen on (ignored under socket activation).
    pub socket: PathBuf,
    /// The group allowed to connect.
    pub group: String,
    /// Raw block devices clients may hand over (by fd); any other block device is refused.
    pub allowed_devices: Vec<PathBuf>,
    /// Bytes of shared RAM tier held for all clients, over all models (`0` = none).
    pub ram_tier_budget: Size,
    /// Reader settings for every model the daemon opens.
    pub reader: ReaderSection,
    /// Resource limits.
    pub limits: LimitsSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET_PATH),
            group: DEFAULT_GROUP.to_owned(),
            allowed_devices: Vec::new(),
            ram_tier_budget: Size(0),
            reader: ReaderSection::default(),
            limits: LimitsSection::default(),
        }
    }
}

/// `[reader]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderSection {
    /// Reads in flight at once.
    pub queue_depth: u32,
    /// Bytes per read request.
    pub request_size: Size,
    /// Staging slots.
    pub staging_buffers: u32,
    /// Bytes per staging slot.
    pub staging_buffer_size: Size,
    /// `auto`, `uring` or `threads`.
    pub engine: String,
    /// `auto`, `on` or `off`.
    pub direct: String,
}

impl Default for ReaderSection {
    fn default() -> Self {
        let r = ReaderConfig::default();
        Self {
            queue_depth: r.queue_depth,
            request_size: Size(r.request_size as u64),
            staging_buffers: u32::try_from(r.staging_buffers).unwrap_or(u32::MAX),
            staging_buffer_size: Size(r.staging_buffer_size as u64),
            engine: "auto".into(),
            direct: "auto".into(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Connections served at once; more are told so and closed.
    pub max_clients: u32,
    /// Largest frame payload accepted, in bytes.
    pub max_message_bytes: Size,
    /// Models one connection may hold open.
    pub max_models_per_client: u32,
    /// Once a frame has begun, the rest must come within this many milliseconds (a client that
    /// stalls inside a frame is disconnected; idle time between frames is unlimited).
    pub frame_timeout_ms: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_clients: 64,
            max_message_bytes: Size(64 << 10),
            max_models_per_client: 16,
            frame_timeout_ms: 10_000,
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Socket path.
    pub socket: PathBuf,
    /// Owner group name.
    pub group: String,
    /// Allowed raw block devices.
    pub allowed_devices: Vec<PathBuf>,
    /// RAM tier budget in bytes.
    pub ram_tier_budget: u64,
    /// Reader settings.
    pub reader: ReaderConfig,
    /// Connections at once.
    pub max_clients: usize,
    /// Largest frame payload.
    pub max_message_bytes: u32,
    /// Models per connection.
    pub max_models_per_client: usize,
    /// Time allowed for the rest of a frame once it has begun.
    pub frame_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        // The defaults validate; `validate` is the one place that builds settings.
        FileConfig::default()
            .validate(Path::new("<defaults>"))
            .unwrap_or_else(|_| unreachable_defaults())
    }
}

#[cold]
fn unreachable_defaults() -> Settings {
    Settings {
        socket: PathBuf::from(DEFAULT_SOCKET_PATH),
        group: DEFAULT_GROUP.into(),
        allowed_devices: Vec::new(),
        ram_tier_budget: 0,
        reader: ReaderConfig::default(),
        max_clients: 64,
        max_message_bytes: 64 << 10,
        max_models_per_client: 16,
        frame_timeout: std::time::Duration::from_secs(10),
    }
}

impl FileConfig {
    /// Parse TOML text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Check ranges and build the settings.
    pub fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
        let bad = |field: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let usize_of = |field: &str, v: u64| {
            usize::try_from(v).map_err(|_| bad(field, format!("{v} does not fit in memory")))
        };
        if self.socket.as_os_str().is_empty() || !self.socket.is_absolute() {
            return Err(bad("socket", "must be an absolute path".into()));
        }
        if self.group.is_empty() {
            return Err(bad("group", "must not be empty".into()));
        }
        if let Some(d) = self.allowed_devices.iter().find(|d| !d.is_absolute()) {
            return Err(bad(
                "allowed_devices",
                format!("{} is not an absolute path", d.display()),
            ));
        }
        let r = &self.reader;
        let reader = ReaderConfig {
            engine: r
                .engine
                .parse::<EngineChoice>()
                .map_err(|e| bad("reader.engine", e.to_string()))?,
            direct: r
                .direct
                .parse::<DirectChoice>()
                .map_err(|e| bad("reader.direct", e.to_string()))?,
            queue_depth: r.queue_depth,
            request_size: usize_of("reader.request_size", r.request_size.0)?,
            staging_buffers: usize_of("reader.staging_buffers", u64::from(r.staging_buffers))?,
            staging_buffer_size: usize_of("reader.staging_buffer_size", r.staging_buffer_size.0)?,
            ..ReaderConfig::default()
        };
        reader.validate().map_err(|e| match e {
            llmstream::Error::Config { field, reason } => bad(&format!("reader.{field}"), reason),
            other => bad("reader", other.to_string()),
        })?;
        let l = &self.limits;
        if l.max_clients == 0 || l.max_clients > 65536 {
            return Err(bad(
                "limits.max_clients",
                format!("{} is outside 1..=65536", l.max_clients),
            ));
        }
        let mmb = l.max_message_bytes.0;
        if !(256..=(16 << 20)).contains(&mmb) {
            return Err(bad(
                "limits.max_message_bytes",
                format!("{mmb} is outside 256..=16M"),
            ));
        }
        if l.max_models_per_client == 0 {
            return Err(bad(
                "limits.max_models_per_client",
                "must be at least 1".into(),
            ));
        }
        if !(1..=600_000).contains(&l.frame_timeout_ms) {
            return Err(bad(
                "limits.frame_timeout_ms",
                format!("{} is outside 1..=600000", l.frame_timeout_ms),
            ));
        }
        Ok(Settings {
            frame_timeout: std::time::Duration::from_millis(u64::from(l.frame_timeout_ms)),
            socket: self.socket,
            group: self.group,
            allowed_devices: self.allowed_devices,
            ram_tier_budget: self.ram_tier_budget.0,
            reader,
            max_clients: usize_of("limits.max_clients", u64::from(l.max_clients))?,
            max_message_bytes: u32::try_from(mmb)
                .map_err(|_| bad("limits.max_message_bytes", "too large".into()))?,
            max_models_per_client: usize_of(
                "limits.max_models_per_client",
                u64::from(l.max_models_per_client),
            )?,
        })
    }
}

/// Load the configuration. `explicit` is the `--config` argument: a missing explicit file is an
/// error, a missing default file means defaults.
pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return FileConfig::default().validate(path);
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    FileConfig::parse(&text, path)?.validate(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        FileConfig::parse(text, Path::new("t.toml"))?.validate(Path::new("t.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.socket, Path::new(DEFAULT_SOCKET_PATH));
        assert_eq!(s.group, "llmstream");
        assert!(s.allowed_devices.is_empty());
        assert_eq!(s.ram_tier_budget, 0);
        assert_eq!(s.reader, ReaderConfig::default());
        assert_eq!(s.max_clients, 64);
        assert_eq!(s.max_message_bytes, 64 << 10);
        assert_eq!(s.max_models_per_client, 16);
        assert_eq!(s.frame_timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn full_file_parses() {
        let s = parse(
            r#"
socket = "/tmp/x.sock"
group = "wheel"
allowed_devices = ["/dev/nvme1n1"]
ram_tier_budget = "16G"
[reader]
queue_depth = 64
request_size = "2M"
staging_buffers = 4
staging_buffer_size = 16777216
engine = "threads"
direct = "off"
[limits]
max_clients = 3
max_message_bytes = "1K"
max_models_per_client = 2
frame_timeout_ms = 250
"#,
        )
        .unwrap();
        assert_eq!(s.socket, Path::new("/tmp/x.sock"));
        assert_eq!(s.group, "wheel");
        assert_eq!(s.allowed_devices, vec![PathBuf::from("/dev/nvme1n1")]);
        assert_eq!(s.ram_tier_budget, 16 << 30);
        assert_eq!(s.reader.queue_depth, 64);
        assert_eq!(s.reader.request_size, 2 << 20);
        assert_eq!(s.reader.staging_buffers, 4);
        assert_eq!(s.reader.staging_buffer_size, 16 << 20);
        assert_eq!(s.reader.engine, EngineChoice::Threads);
        assert_eq!(s.reader.direct, DirectChoice::Off);
        assert_eq!(s.max_clients, 3);
        assert_eq!(s.max_message_bytes, 1024);
        assert_eq!(s.max_models_per_client, 2);
        assert_eq!(s.frame_timeout, std::time::Duration::from_millis(250));
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse("sockett = \"/x\"").unwrap_err().to_string();
        assert!(e.contains("sockett"), "{e}");
        let e = parse("[limits]\nmax_client = 3").unwrap_err().to_string();
        assert!(e.contains("max_client"), "{e}");
    }

    #[test]
    fn bad_size_is_named() {
        let e = parse("ram_tier_budget = \"16Q\"").unwrap_err().to_string();
        assert!(e.contains("ram_tier_budget") && e.contains("16Q"), "{e}");
        let e = parse("[reader]\nrequest_size = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("request_size"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let e = parse("[reader]\nrequest_size = \"3K\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reader.request_size"), "{e}");
        let e = parse("[reader]\nengine = \"warp\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reader.engine"), "{e}");
        let e = parse("[limits]\nmax_clients = 0").unwrap_err().to_string();
        assert!(e.contains("limits.max_clients"), "{e}");
        let e = parse("[limits]\nmax_message_bytes = 10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_message_bytes"), "{e}");
        let e = parse("socket = \"rel.sock\"").unwrap_err().to_string();
        assert!(e.contains("`socket`"), "{e}");
    }

    #[test]
    fn missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        assert!(matches!(load(Some(&p)), Err(ConfigError::Read { .. })));
        std::fs::write(&p, "group = \"g\"\n").unwrap();
        assert_eq!(load(Some(&p)).unwrap().group, "g");
    }
}

#[cfg(test)]
mod example {
    use super::*;

    #[test]
    fn example_file_spells_out_the_defaults() {
        let text = include_str!("../llmstreamd.example.toml");
        let parsed = FileConfig::parse(text, Path::new("example")).unwrap();
        assert_eq!(parsed, FileConfig::default());
    }
}
