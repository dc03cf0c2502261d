#pragma once
// ckptd as a systemd service: readiness and status notifications, watchdog
// pings and socket activation, through libsystemd. Outside systemd (no
// NOTIFY_SOCKET, no LISTEN_FDS) every call is a cheap no-op.

#include <chrono>
#include <optional>
#include <string_view>
#include <vector>

namespace ckptd::daemon::service {

// Sends one notification ("READY=1", "STATUS=...", "WATCHDOG=1", ...).
void notify(std::string_view state);

// The interval at which WATCHDOG=1 must be sent, when WatchdogSec= is set for
// this process; nullopt otherwise.
std::optional<std::chrono::microseconds> watchdog_interval();

// Listening sockets passed by socket activation (LISTEN_FDS/LISTEN_PID), made
// close-on-exec; empty when none were passed. The environment variables are
// removed so that children do not inherit them.
std::vector<int> activated_sockets();

}  // namespace ckptd::daemon::service
