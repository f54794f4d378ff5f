//! Readiness for the service manager: under systemd with `Type=notify` (`NOTIFY_SOCKET` set),
//! `READY=1` once the agent enforces, so `systemctl start` returns when the programs are
//! attached and the control socket and metrics are served. Elsewhere it does nothing.

/// Tells systemd the agent is ready (enforcing). A failure is logged, never fatal: the agent
/// enforces all the same, and systemd's start timeout says the rest.
pub fn ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("enforcing"),
    ]) {
        log::warn!("telling systemd the agent is ready (sd_notify READY=1): {e}");
    }
}
