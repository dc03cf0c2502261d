#include "service.hpp"

#include <ckptd/log.hpp>

#include <fcntl.h>
#include <systemd/sd-daemon.h>

#include <cstdint>
#include <string>

namespace ckptd::daemon::service {

void notify(std::string_view state) {
  const std::string message(state);
  // Returns 0 when NOTIFY_SOCKET is unset: not under systemd, nothing to do.
  if (int r = ::sd_notify(/*unset_environment=*/0, message.c_str()); r < 0) {
    log::debug("sd_notify failed: ", -r);
  }
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  std::uint64_t usec = 0;
  if (::sd_watchdog_enabled(/*unset_environment=*/0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec);
}

std::vector<int> activated_sockets() {
  std::vector<int> fds;
  int n = ::sd_listen_fds(/*unset_environment=*/1);
  if (n < 0) {
    log::warning("ignoring passed sockets: sd_listen_fds failed: ", -n);
    return fds;
  }
  for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; ++fd) {
    if (::sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1) <= 0) {
      log::warning("ignoring passed file descriptor ", fd, ": not a listening stream socket");
      continue;
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    fds.push_back(fd);
  }
  return fds;
}

}  // namespace ckptd::daemon::service
