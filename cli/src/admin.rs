//! `ldlm-lock`: the admin CLI that lists and unlocks the locks of a running server over its IPC
//! socket, as go-ldlm's does, but over our own IPC protocol and with an `unlock` that works
//! (go-ldlm's B3).
//!
//! ```text
//! ldlm-lock [-s|--socket PATH] list [--json]
//! ldlm-lock [-s|--socket PATH] unlock NAME [KEY]
//! ldlm-lock [-s|--socket PATH] cluster status [--json]
//! ldlm-lock [-s|--socket PATH] cluster add ID=HOST:PORT [--json]
//! ldlm-lock [-s|--socket PATH] cluster remove ID [--json]
//! ```
//!
//! In cluster mode `list` and `unlock` act on the whole cluster (through its leader), whichever
//! node's socket they use; `cluster status` shows this node's view: its id, the leader, the
//! term, its commit and applied index, and every member with its role and last contact.
//! `cluster add` makes a node started with `--cluster_join` a member (it first catches up as a
//! learner, then votes); `cluster remove` takes a member out. Both go through the leader and
//! print the cluster's status once the change is committed.
//!
//! The socket is `--socket`, else `LDLM_IPC_SOCKET_FILE` (an empty value counts as unset), else
//! [`crate::config::default_ipc_socket_file`]. Output is go-ldlm's: `list` prints
//! `{Name: <name>, Key: <key>, Size: <size>}` per held slot or `No locks found`; `unlock` prints
//! `Unlocked: true`. Failures go to stderr with exit code 1 (server messages verbatim); usage
//! errors are clap's, exit code 2.
//!
//! Unlike go-ldlm's (its B3), `unlock` works; `unlock NAME` without a key releases the only
//! holder, and fails listing the keys when the lock has several.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ldlm_ipc::{ClientError, ClusterEntry, LockEntry, Request, Response};

/// The environment variable naming the socket (also the server's `--ipc_socket_file`).
pub const SOCKET_ENV: &str = "LDLM_IPC_SOCKET_FILE";

/// How long one read or write on the socket may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The same for a membership change, which waits for a new node to catch up (the leader gives
/// it a minute).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(90);

/// Command line of `ldlm-lock`.
#[derive(Debug, Parser)]
#[command(
    name = "ldlm-lock",
    version,
    about = "List and unlock the locks of a running ldlm-server through its IPC socket"
)]
pub struct Cli {
    /// The server's IPC socket [env: LDLM_IPC_SOCKET_FILE] [default: $TMPDIR/ldlm-ipc.sock]
    #[arg(short = 's', long = "socket", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// List every held lock slot
    List {
        /// Print a JSON array (name, key, size, owner, fencing_token, lease_expires_in_ms)
        #[arg(long)]
        json: bool,
    },
    /// Release a held lock: the hold with KEY, or without KEY the lock's only holder
    Unlock {
        /// The lock's name
        name: String,
        /// The key of the hold to release (see `list`); required when the lock has several
        /// holders
        key: Option<String>,
    },
    /// Cluster mode: this node's view of the cluster
    Cluster {
        /// What to show.
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// `ldlm-lock cluster ...`.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum ClusterCommand {
    /// This node's id, the leader, the term, commit and applied index, and every member
    Status {
        /// Print one JSON object (node_id, cluster_id, leader, term, commit_index, applied_index,
        /// members)
        #[arg(long)]
        json: bool,
    },
    /// Add a node (started with --cluster_join): it catches up as a learner, then votes
    Add {
        /// The node as ID=HOST:PORT (its id and peer address)
        #[arg(value_parser = parse_member)]
        member: (u64, String),
        /// Print the resulting status as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (a voter or a learner); stop its server afterwards
    Remove {
        /// The node's id
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// Print the resulting status as one JSON object
        #[arg(long)]
        json: bool,
    },
}

/// `ID=HOST:PORT` → (id, address).
fn parse_member(text: &str) -> Result<(u64, String), String> {
    let (id, address) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id: u64 = id
        .trim()
        .parse()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| format!("{id:?} is not a node id (a positive integer)"))?;
    let address = address.trim();
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok((id, address.to_owned()))
        }
        _ => Err(format!("{address:?} is not HOST:PORT")),
    }
}

/// The `ldlm-lock` command line as a [`clap::Command`] (the one [`Cli`] parses with), for shell
/// completions and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The socket path: the flag, else the environment value (if not empty), else the default.
pub fn socket_path(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(crate::config::default_ipc_socket_file)
}

/// Runs `ldlm-lock` with its real arguments, environment and standard streams.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let socket = socket_path(cli.socket.clone(), std::env::var_os(SOCKET_ENV));
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut err = io::stderr();
    let mut code = run(&cli.command, &socket, &mut out, &mut err);
    if let Err(e) = out.flush() {
        let _ = writeln!(err, "ldlm-lock: cannot write output: {e}");
        code = 1;
    }
    std::process::ExitCode::from(code)
}

/// Runs one command against the server at `socket`, writing results to `out` and failures to
/// `err`. Returns the exit code (0 or 1).
pub fn run(command: &Command, socket: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let request = match command {
        Command::List { .. } => Request::List,
        Command::Unlock { name, key } => Request::Unlock {
            name: name.clone(),
            key: key.clone(),
        },
        Command::Cluster {
            command: ClusterCommand::Status { .. },
        } => Request::ClusterStatus,
        Command::Cluster {
            command: ClusterCommand::Add { member, .. },
        } => Request::ClusterAdd {
            id: member.0,
            address: member.1.clone(),
        },
        Command::Cluster {
            command: ClusterCommand::Remove { id, .. },
        } => Request::ClusterRemove { id: *id },
    };
    let timeout = match request {
        Request::ClusterAdd { .. } | Request::ClusterRemove { .. } => MEMBERSHIP_TIMEOUT,
        _ => TIMEOUT,
    };
    let response = match ldlm_ipc::request(socket, &request, timeout) {
        Ok(response) => response,
        Err(e) => {
            let _ = writeln!(err, "{}", client_error_message(&e));
            return 1;
        }
    };
    let written = match (command, response) {
        (_, Response::Error { message }) => {
            let _ = writeln!(err, "{message}");
            return 1;
        }
        (Command::List { json }, Response::Locks(locks)) => print_locks(out, &locks, *json),
        (Command::Unlock { .. }, Response::Unlocked { .. }) => writeln!(out, "Unlocked: true"),
        (
            Command::Cluster {
                command:
                    ClusterCommand::Status { json }
                    | ClusterCommand::Add { json, .. }
                    | ClusterCommand::Remove { json, .. },
            },
            Response::Cluster(cluster),
        ) => print_cluster(out, &cluster, *json),
        (_, other) => {
            let _ = writeln!(
                err,
                "IPC error: unexpected response from the server: {other:?}"
            );
            return 1;
        }
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "ldlm-lock: cannot write output: {e}");
            1
        }
    }
}

/// go-ldlm's message for a failed call; the hint is for the case where nothing answered.
fn client_error_message(error: &ClientError) -> String {
    match error {
        ClientError::Connect { .. } => format!(
            "IPC error: {error}. Is the ldlm server running? Do you need to specify the socket \
             file path? See help"
        ),
        _ => format!("IPC error: {error}"),
    }
}

fn print_locks(out: &mut dyn Write, locks: &[LockEntry], json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, locks)?;
        return writeln!(out);
    }
    if locks.is_empty() {
        return writeln!(out, "No locks found");
    }
    for lock in locks {
        writeln!(
            out,
            "{{Name: {}, Key: {}, Size: {}}}",
            lock.name, lock.key, lock.size
        )?;
    }
    Ok(())
}

fn print_cluster(out: &mut dyn Write, cluster: &ClusterEntry, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, cluster)?;
        return writeln!(out);
    }
    let shown = |index: Option<u64>| index.map_or_else(|| "-".to_owned(), |i| i.to_string());
    writeln!(out, "node:    {}", cluster.node_id)?;
    writeln!(
        out,
        "cluster: {}",
        cluster
            .cluster_id
            .as_deref()
            .unwrap_or("- (formed by a version without ids)")
    )?;
    match cluster.leader {
        Some(leader) => writeln!(out, "leader:  {leader}")?,
        None => writeln!(out, "leader:  none (an election is running)")?,
    }
    writeln!(out, "term:    {}", cluster.term)?;
    writeln!(out, "commit:  {}", shown(cluster.commit_index))?;
    writeln!(out, "applied: {}", shown(cluster.applied_index))?;
    writeln!(
        out,
        "{:<6} {:<24} {:<10} LAST CONTACT",
        "ID", "ADDRESS", "ROLE"
    )?;
    for member in &cluster.members {
        let contact = member
            .last_contact_ms
            .map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago"));
        writeln!(
            out,
            "{:<6} {:<24} {:<10} {contact}",
            member.id, member.address, member.role
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_shapes() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["ldlm-lock", "-s", "/x.sock", "list", "--json"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/x.sock")));
        assert_eq!(cli.command, Command::List { json: true });
        let cli = Cli::try_parse_from(["ldlm-lock", "unlock", "n", "--socket", "/y"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/y")));
        assert_eq!(
            cli.command,
            Command::Unlock {
                name: "n".into(),
                key: None
            }
        );
        let cli = Cli::try_parse_from(["ldlm-lock", "unlock", "n", "k"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Unlock {
                name: "n".into(),
                key: Some("k".into())
            }
        );
        let error = Cli::try_parse_from(["ldlm-lock"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error = Cli::try_parse_from(["ldlm-lock", "unlock"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn socket_path_precedence() {
        assert_eq!(
            socket_path(Some("/flag".into()), Some("/env".into())),
            PathBuf::from("/flag")
        );
        assert_eq!(
            socket_path(None, Some("/env".into())),
            PathBuf::from("/env")
        );
        let default = crate::config::default_ipc_socket_file();
        assert_eq!(socket_path(None, Some(OsString::new())), default);
        assert_eq!(socket_path(None, None), default);
    }

    #[test]
    fn list_output_is_go_ldlms() {
        let mut out = Vec::new();
        print_locks(&mut out, &[], false).unwrap();
        assert_eq!(out, b"No locks found\n");
        let lock = LockEntry {
            name: "n".into(),
            key: "k".into(),
            size: 2,
            owner: 1,
            fencing_token: 9,
            lease_expires_in_ms: Some(5),
        };
        let mut out = Vec::new();
        print_locks(&mut out, std::slice::from_ref(&lock), false).unwrap();
        assert_eq!(out, b"{Name: n, Key: k, Size: 2}\n");
        let mut out = Vec::new();
        print_locks(&mut out, &[], true).unwrap();
        assert_eq!(out, b"[]\n");
    }
}
