//! The command line's definitions (clap): every command, flag and help
//! text `offsite --help` shows. Nothing here runs anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Ships database backups off the host: staged, resumable, to many destinations at once.
///
/// Exit codes: 0 everything asked for succeeded; 1 failed; 2 usage or
/// configuration error; 3 partial: the backup is staged and some destinations
/// succeeded, others failed (run `offsite upload` to resume them); 4 pending:
/// restore or verify asked cold storage (S3 GLACIER/DEEP_ARCHIVE, Azure
/// Archive) for a retrieval that is not ready yet (run the same command
/// again later).
#[derive(Debug, Parser)]
#[command(name = "offsite", version, about, long_about)]
pub struct Cli {
    /// Configuration file [default: $OFFSITE_CONFIG, else ./offsite.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print exactly one JSON document on stdout (progress and notes stay on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only results and errors: no progress bars, no notes
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print every line hooks and the source command write on stderr, as they write it
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented example offsite.toml into DIR (default: the current folder)
    Init { dir: Option<PathBuf> },
    /// Make an age key pair for encryption (prints the public key)
    ///
    /// Writes the identity (the private key) to FILE, mode 0600, and prints
    /// the public key for the job's `encryption = { recipients = [...] }`.
    /// Keep FILE on the restore host and a copy offline: without it no
    /// backup encrypted to this key can be read.
    Keygen {
        /// Where to write the identity; never overwritten
        file: PathBuf,
    },
    /// Validate the configuration and reach every destination with the calls a backup makes
    ///
    /// A destination that does not answer is retried once (a backup retries
    /// `retries` times, 7 by default), so a wrong host or port fails at once.
    Check {
        /// Also write, read back and delete a small test object on every destination
        #[arg(long)]
        write_test: bool,
    },
    /// Stage a backup of each job (or --job) and upload it to the job's destinations
    Backup {
        #[command(flatten)]
        job: JobArg,
        /// Take a full backup (the default)
        #[arg(long, conflicts_with = "incremental")]
        full: bool,
        /// Pack only files changed since the job's last backup, and of a file
        /// changed in place only its changed blocks (dir sources; a command
        /// source, or a job with no earlier backup here, gets a full one)
        #[arg(long)]
        incremental: bool,
        /// Stage only; `offsite upload` sends it later
        #[arg(long)]
        no_upload: bool,
        /// Cluster jobs: the set this member's backup belongs to, as its UTC
        /// time (20261201T020000Z) [default: the start of the current
        /// cluster window]
        #[arg(long, value_name = "ID")]
        set: Option<String>,
    },
    /// Upload, or resume uploading, staged backups not yet on every destination
    Upload {
        #[command(flatten)]
        job: JobArg,
    },
    /// List the complete backups on each destination, oldest first
    List {
        #[command(flatten)]
        job: JobArg,
        #[command(flatten)]
        destination: DestinationArg,
    },
    /// Download backups and check every volume and file hash (writes nothing)
    Verify {
        #[command(flatten)]
        job: JobArg,
        #[command(flatten)]
        destination: DestinationArg,
        /// A backup id, or `latest` [default: every complete backup]
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        /// With `latest`: the newest backup of this host [default: this
        /// host's host_id, else the only host there is]
        #[arg(long, value_name = "H")]
        host: Option<String>,
        /// age identity file for encrypted backups [default: the job's
        /// encryption.identity_file]; without one, encrypted volumes are
        /// checked as stored (sizes and their recorded hash), not unpacked
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Cluster jobs: only this set (its members' backups, and its
        /// verdict: a partial set exits 3) [default: every set]
        #[arg(long, value_name = "ID", conflicts_with_all = ["backup", "host"])]
        set: Option<String>,
    },
    /// Restore a backup into an empty folder, checking every hash
    Restore {
        /// The job whose backup to restore
        #[arg(long, value_name = "J")]
        job: String,
        #[command(flatten)]
        destination: DestinationArg,
        /// A backup id, or `latest`
        #[arg(long, value_name = "ID", default_value = "latest")]
        backup: String,
        /// With `latest`: the newest backup of this host [default: this
        /// host's host_id, else the only host there is]
        #[arg(long, value_name = "H")]
        host: Option<String>,
        /// The folder to restore into; created if missing, must be empty unless --force
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Restore into a folder that is not empty, replacing files of the same name
        #[arg(long)]
        force: bool,
        /// age identity file that opens an encrypted backup [default: the
        /// job's encryption.identity_file]
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Cluster jobs: restore this set, every member into DIR/<member>/
        /// (or only --member, into DIR)
        #[arg(long, value_name = "ID", conflicts_with_all = ["host"])]
        set: Option<String>,
        /// With --set: only this member's backup
        #[arg(long, value_name = "M", requires = "set")]
        member: Option<String>,
        /// With --set: restore a partial set's members that are there (the
        /// missing ones are named)
        #[arg(long, requires = "set")]
        allow_partial: bool,
    },
    /// Apply the retention policy: delete the backups it does not keep (manifest first)
    Prune {
        #[command(flatten)]
        job: JobArg,
        #[command(flatten)]
        destination: DestinationArg,
        /// Print the decisions without deleting anything
        #[arg(long)]
        dry_run: bool,
        /// Evaluate the policy as of this time (RFC 3339, e.g. 2026-12-01T02:00:00Z) [default: now]
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
    },
    /// Show each job's last full and incremental, per destination, and its next scheduled runs
    ///
    /// With --check, a health check for monitoring: exits 1 and prints one
    /// line per problem (job, destination, why) when a job's last run
    /// failed, was partial or was stopped, when it never ran, when its last
    /// prune failed, when no backup has reached a destination, or when a
    /// destination's newest complete backup (counted from when it was made)
    /// is older than the job's max_age (default: one and a half times the
    /// longest gap between its scheduled backups; not checked for a job with
    /// neither). The JSON's top-level status is the worst job's: ok, stale,
    /// partial or failed.
    Status {
        #[command(flatten)]
        job: JobArg,
        /// Exit 1 when any job has a problem, printing one line per problem
        #[arg(long)]
        check: bool,
    },
    /// Run the jobs' schedules in the foreground (one log line per run; JSON Lines with --json)
    ///
    /// Stops on SIGTERM or SIGINT: starts nothing new, lets a running backup
    /// wind down to a resumable state (post hooks run, parts in flight reach
    /// the journal), and exits 0. One daemon per staging folder.
    Daemon {
        #[command(flatten)]
        job: JobArg,
    },
    /// Print least-privilege IAM policies or a lifecycle rule for a destination (JSON)
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Glacier vault destinations: rebuild the local catalog from the vault
    #[command(subcommand)]
    Glacier(GlacierCommand),
    /// Print a shell completion script (bash, zsh or fish) on stdout
    ///
    /// bash: `offsite completions bash > /etc/bash_completion.d/offsite`;
    /// zsh: into a folder of your $fpath as `_offsite`; fish: into
    /// ~/.config/fish/completions/offsite.fish. Reads no configuration.
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print a man page (roff) on stdout: offsite's, or one command's
    /// (`offsite man backup > offsite-backup.1`); `make man` writes them all
    #[command(hide = true)]
    Man {
        /// The command whose page to print [default: offsite's own, which
        /// lists every command]
        command: Option<String>,
        /// Write every page (offsite.1, offsite-COMMAND.1) into this folder instead
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        out: Option<PathBuf>,
    },
}

/// A shell `offsite completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// The Z shell.
    Zsh,
    /// The friendly interactive shell.
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum GlacierCommand {
    /// Rebuild a vault's catalog (archive id to key) when the local one is lost
    ///
    /// A vault names its archives itself and lists them only through an
    /// inventory job, which takes hours on AWS. So this runs in steps: the
    /// first run starts an inventory job and exits 4; a run after it has
    /// finished rebuilds the catalog from it (each archive's description
    /// holds its key) and starts retrieval jobs for the manifests, exiting 4;
    /// the run after those finish keeps the manifests and exits 0. Run it
    /// again (by hand or from cron) until it exits 0. Archives offsite did not
    /// write are counted and left alone. Once done, another run starts over
    /// with a new inventory.
    Inventory {
        /// The Glacier destination, as named in the configuration
        #[arg(long, value_name = "D")]
        destination: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// IAM policies for an S3 destination's uploader, pruner and restorer, or its lifecycle rule
    ///
    /// uploader: s3:PutObject on the prefix and a Deny of any write that
    /// could overwrite (one without If-None-Match), plus
    /// s3:PutObjectRetention with object_lock (the database host, put_only =
    /// true). pruner: list, read manifests, delete (with object_lock: object
    /// versions and retention too). restorer: list, read, RestoreObject. lifecycle: a bucket lifecycle configuration that
    /// expires each job's objects some days after the oldest backup its
    /// retention keeps (a backstop for a pruner that stopped) and aborts
    /// multipart uploads left unfinished. Without --role: all four in one
    /// JSON object.
    S3 {
        /// The S3 destination, as named in the configuration
        #[arg(long, value_name = "D")]
        destination: String,
        /// Which document to print [default: all four]
        #[arg(long, value_enum)]
        role: Option<PolicyRole>,
        /// lifecycle: expire after this many days instead of the age derived
        /// from the retention (required when the retention is keep_last only)
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        expire_after: Option<u32>,
        /// lifecycle: abort multipart uploads unfinished after this many days
        /// (an interrupted upload not resumed by then restarts its volume)
        #[arg(long, value_name = "DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
        abort_after: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyRole {
    Uploader,
    Pruner,
    Restorer,
    Lifecycle,
}

#[derive(Debug, Args)]
pub struct JobArg {
    /// Only this job [default: every job]
    #[arg(long, value_name = "J")]
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct DestinationArg {
    /// Only this destination [default: each of the job's destinations]
    #[arg(long, value_name = "D")]
    pub destination: Option<String>,
}
