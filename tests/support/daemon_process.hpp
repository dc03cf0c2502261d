#pragma once
// Runs the real ckptd binary for black-box tests: on 127.0.0.1, on a port the
// kernel picks (--listen 127.0.0.1:0, read back from the daemon's log), with
// stderr captured to a file. Every process started is stopped by its PID.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::test {

// The ckptd binary under test: the argument after "--" on the test's command line.
const std::string& daemon_binary();

class daemon_process {
 public:
  // Starts ckptd with `args` plus "--listen 127.0.0.1:0" (unless args has --listen)
  // and waits until it logs the port it bound. Throws if it exits first.
  explicit daemon_process(std::vector<std::string> args);
  ~daemon_process();  // SIGKILL and reap, if still running
  daemon_process(const daemon_process&) = delete;
  daemon_process& operator=(const daemon_process&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Everything the daemon wrote to stderr so far.
  std::string log() const;
  bool running();

  // SIGTERM, then waits up to `deadline`; returns the exit code, or -1 when it
  // had to be killed, or 128+signal when a signal ended it.
  int stop(std::chrono::milliseconds deadline = std::chrono::seconds(10));
  // SIGKILL and reap: a crash at an arbitrary moment.
  void kill9();

 private:
  int wait_exit(std::chrono::milliseconds deadline);
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::filesystem::path log_path_;
};

// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace ckptd::test
