//! The built `pushgate` executable, driven as a user would.
#![allow(clippy::unwrap_used)]

/// `$name::sqlite` and `$name::postgres` for each `fn $name(backend: Backend)`: one test, run
/// on each spool (PostgreSQL's skipped where it is not installed, outside CI).
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(crate::gateway_harness::Backend::Sqlite);
                }

                #[test]
                fn postgres() {
                    if let Some(pg) = crate::gateway_harness::Backend::postgres() {
                        super::$name(pg);
                    }
                }
            }
        )*
    };
}

/// `pushgate bench`: a small smoke run (figures are for BENCHMARKS.md, not tests).
mod bench;
/// Momentum bounces: DSNs for injected notifications that fail, at an aiosmtpd relay; a null
/// sender, the relay down, kill -9 with a DSN queued.
mod bounces;
/// `pushgate cancel` and `pushgate apps pause|resume`: output, exit codes, effects.
mod cancel;
/// `pushgate cert inspect`: a legacy .p12, a PEM certificate, a wrong password.
mod cert;
/// Two gateways on one PostgreSQL database: kill -9 and SIGTERM of one, one provider token,
/// dead tokens and scheduled sends agreed on.
mod cluster;
/// `pushgate config check`: a good file, every problem with its line, exit codes.
mod config;
/// The dashboard in headless Chromium: log in, test send, "delivered", a screenshot.
mod dashboard;
/// `pushgate db status|migrate` on SQLite and PostgreSQL.
mod db;
/// `pushgate serve` delivering to `pushgate mock-apns`: every consequence, faults, expiry,
/// delay, halt and reload, kill -9, SIGTERM, the demo.
mod delivery;
/// A gateway process against a simulator process.
mod gateway_harness;
/// Spawning the binary and talking to it.
mod harness;
/// `pushgate mock-apns` checked with curl and h2load, clients we did not write.
mod mock_apns;
/// Momentum's ways in and out: SMTP and `/v1.0/inject` to the simulator, the delivery log and
/// a failure hook, live reload on SIGHUP with streams in flight.
mod momentum;
/// propeller-apns' beanstalkd jobs through the binary: a crash between commit and delete.
mod propeller;
/// `pushgate send` against a running API: tokens files, --wait, --output json, exit codes.
mod send;
