#include "options.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace ckptd::daemon {
namespace {

namespace po = boost::program_options;

constexpr int max_depth_limit = 32;

po::options_description describe() {
  po::options_description d("Options (each is also a key of the --config file)");
  // clang-format off
  d.add_options()
    ("help,h", "print this help and exit")
    ("version", "print the version and exit")
    ("check-config", "validate the options (and the --config file) and exit: 0 if valid, 1 if not")
    ("config", po::value<std::string>()->value_name("FILE"),
     "read options from an INI file with the same names; the command line wins")
    ("watch", po::value<std::vector<std::string>>()->value_name("DIR"),
     "every immediate subfolder of DIR is a job named after it (repeatable); "
     "DIR;mode=poll;interval=S sets this folder's own watch mode and interval")
    ("job", po::value<std::vector<std::string>>()->value_name("UUID=DIR"),
     "DIR holds the checkpoints of job UUID directly (repeatable; ;mode= and ;interval= as for --watch)")
    ("watch-mode", po::value<std::string>()->value_name("MODE")->default_value("auto"),
     "auto (poll NFS, Lustre, GPFS, CephFS, SMB and FUSE mounts; inotify elsewhere), inotify or poll")
    ("poll-interval", po::value<double>()->value_name("SECONDS")->default_value(10),
     "seconds between walks of a polled folder")
    ("db", po::value<std::string>()->value_name("DIR"),
     "folder of the RocksDB index (default: $STATE_DIRECTORY/index, else /var/lib/ckptd/index)")
    ("listen", po::value<std::string>()->value_name("HOST:PORT")->default_value("127.0.0.1:8321"),
     "address to serve HTTP on; port 0 picks a free port")
    ("max-depth", po::value<int>()->value_name("N")->default_value(4),
     "folder levels below a job folder searched for checkpoints")
    ("settle-time", po::value<double>()->value_name("SECONDS")->default_value(3),
     "quiet time after which a checkpoint without a completion marker is complete")
    ("rescan-interval", po::value<double>()->value_name("SECONDS")->default_value(30),
     "how often folders inotify cannot watch or read, and failed index writes, are retried")
    ("rate-limit", po::value<double>()->value_name("N")->default_value(20),
     "requests per second allowed per client address (0: unlimited)")
    ("rate-burst", po::value<double>()->value_name("N")->default_value(40),
     "requests a client address may send at once")
    ("log-level", po::value<std::string>()->value_name("LEVEL")->default_value("info"),
     "error, warning, notice, info or debug")
    ("auth-token-file", po::value<std::string>()->value_name("FILE"),
     "require 'Authorization: Bearer <token>' with a token from FILE (one per line) "
     "on every route but /healthz and /readyz")
    ("cors-origin", po::value<std::vector<std::string>>()->value_name("ORIGIN"),
     "let browser pages from ORIGIN call the API (repeatable; '*' for any)")
    ("max-connections", po::value<long long>()->value_name("N")->default_value(4096),
     "most connections open at once; more get 503")
    ("rate-clients", po::value<long long>()->value_name("N")->default_value(10000),
     "most client addresses the rate limiter tracks (idle ones are evicted first)")
    ("body-cache-mb", po::value<double>()->value_name("MIB")->default_value(2),
     "memory for serialized job bodies, least recently used dropped first "
     "(0: keep every body)")
    ("rebuild-index", "move the index (--db) aside and rebuild it from the disk")
    ("demo", po::value<std::string>()->value_name("DIR"),
     "run a simulated training job in DIR, watch it and keep the index in DIR/db");
  // clang-format on
  return d;
}

bool parse_listen(const std::string& text, settings& out, std::string& why) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    why = "expected HOST:PORT";
    return false;
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = text.substr(colon + 1);
  char* end = nullptr;
  long value = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || value < 0 || value > 65535) {
    why = "port must be a number from 0 to 65535";
    return false;
  }
  out.listen_host = host;
  out.listen_port = static_cast<std::uint16_t>(value);
  return true;
}

bool parse_mode(std::string_view text, watcher::watch_mode& out) {
  if (text == "auto")
    out = watcher::watch_mode::automatic;
  else if (text == "inotify")
    out = watcher::watch_mode::inotify;
  else if (text == "poll")
    out = watcher::watch_mode::poll;
  else
    return false;
  return true;
}

// "DIR[;mode=MODE][;interval=SECONDS]"
bool parse_folder(const std::string& text, watcher::folder& out, std::string& why) {
  auto semi = text.find(';');
  out.path = text.substr(0, semi);
  if (out.path.empty()) {
    why = "the folder is empty";
    return false;
  }
  while (semi != std::string::npos) {
    auto next = text.find(';', semi + 1);
    std::string item = text.substr(semi + 1, next == std::string::npos ? next : next - semi - 1);
    semi = next;
    if (item.rfind("mode=", 0) == 0) {
      watcher::watch_mode mode;
      if (!parse_mode(item.substr(5), mode)) {
        why = "mode must be auto, inotify or poll";
        return false;
      }
      out.mode = mode;
    } else if (item.rfind("interval=", 0) == 0) {
      char* end = nullptr;
      double seconds = std::strtod(item.c_str() + 9, &end);
      if (*end != '\0' || !(seconds >= 0.1 && seconds <= 86400)) {
        why = "interval must be from 0.1 to 86400 seconds";
        return false;
      }
      out.poll_interval = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
    } else {
      why = "unknown setting '" + item + "' (expected mode= or interval=)";
      return false;
    }
  }
  return true;
}

bool parse_job(const std::string& text, settings& out, std::string& why) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    why = "expected UUID=DIR";
    return false;
  }
  std::string uuid = text.substr(0, eq);
  if (uuid.find('/') != std::string::npos || uuid.size() > 256) {
    why = "a job UUID has no '/' and at most 256 bytes";
    return false;
  }
  watcher::folder f;
  if (!parse_folder(text.substr(eq + 1), f, why)) return false;
  out.jobs.emplace_back(uuid, f);
  return true;
}

// The 1-based line of `file` where `key` is set ("key = value"), or 0.
int config_line(const std::optional<std::string>& file, std::string_view key) {
  if (!file) return 0;
  std::ifstream in(*file);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.compare(start, key.size(), key) != 0) continue;
    auto rest = line.find_first_not_of(" \t", start + key.size());
    if (rest != std::string::npos && line[rest] == '=') return number;
  }
  return 0;
}

// " (config FILE line N)" when the key was set in the config file.
std::string where(const std::optional<std::string>& file, std::string_view key) {
  int line = config_line(file, key);
  return line == 0 ? std::string() : " (" + *file + " line " + std::to_string(line) + ")";
}

// Boost.Program_options 1.81 builds its error messages by substituting
// "%canonical_option%"-style placeholders until none is left; an option name
// or value that itself holds such a sequence makes that loop endless. Such
// text is refused before the parser sees it.
bool has_placeholder(std::string_view text) {
  for (auto open = text.find('%'); open != std::string_view::npos;
       open = text.find('%', open + 1)) {
    auto close = text.find('%', open + 1);
    if (close == std::string_view::npos) return false;
    auto name = text.substr(open + 1, close - open - 1);
    if (!name.empty() && std::all_of(name.begin(), name.end(),
                                     [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; }))
      return true;
  }
  return false;
}

std::chrono::milliseconds seconds_option(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

std::string default_db() {
  // systemd's StateDirectory= may list several folders, separated by ':'.
  if (const char* state = std::getenv("STATE_DIRECTORY"); state != nullptr && *state != '\0') {
    // A folder inside the state directory, not the directory itself:
    // --rebuild-index renames the index, and under the unit only the state
    // directory's inside is writable.
    std::string first(state);
    return first.substr(0, first.find(':')) + "/index";
  }
  return "/var/lib/ckptd/index";
}

// Checks values that program_options cannot; names the option at fault.
bool interpret(const po::variables_map& vm, settings& out) {
  std::string why;
  auto fail = [&](const char* option, const std::string& value) {
    std::cerr << "ckptd: invalid " << option << " '" << value << "'"
              << where(out.config_file, option) << ": " << why << "\n";
    return false;
  };
  if (vm.count("watch")) {
    for (const auto& w : vm["watch"].as<std::vector<std::string>>()) {
      watcher::folder f;
      if (!parse_folder(w, f, why)) return fail("watch", w);
      out.watch.push_back(f);
    }
  }
  const auto mode = vm["watch-mode"].as<std::string>();
  if (!parse_mode(mode, out.watch_mode)) {
    why = "expected auto, inotify or poll";
    return fail("watch-mode", mode);
  }
  const double poll = vm["poll-interval"].as<double>();
  if (!(poll >= 0.1 && poll <= 86400)) {
    why = "must be from 0.1 to 86400 seconds";
    return fail("poll-interval", std::to_string(poll));
  }
  out.poll_interval = seconds_option(poll);
  if (vm.count("job")) {
    for (const auto& j : vm["job"].as<std::vector<std::string>>()) {
      if (!parse_job(j, out, why)) return fail("job", j);
    }
  }
  const auto listen = vm["listen"].as<std::string>();
  if (!parse_listen(listen, out, why)) return fail("listen", listen);

  out.max_depth = vm["max-depth"].as<int>();
  if (out.max_depth < 1 || out.max_depth > max_depth_limit) {
    why = "must be from 1 to " + std::to_string(max_depth_limit);
    return fail("max-depth", std::to_string(out.max_depth));
  }
  const double settle = vm["settle-time"].as<double>();
  if (!(settle >= 0 && settle <= 3600)) {
    why = "must be from 0 to 3600 seconds";
    return fail("settle-time", std::to_string(settle));
  }
  out.settle_time = seconds_option(settle);
  const double rescan = vm["rescan-interval"].as<double>();
  if (!(rescan >= 0.1 && rescan <= 86400)) {
    why = "must be from 0.1 to 86400 seconds";
    return fail("rescan-interval", std::to_string(rescan));
  }
  out.rescan_interval = seconds_option(rescan);
  out.rate_limit = vm["rate-limit"].as<double>();
  out.rate_burst = vm["rate-burst"].as<double>();
  if (!(out.rate_limit >= 0 && out.rate_limit <= 1e9)) {
    why = "must be from 0 (unlimited) to 1e9";
    return fail("rate-limit", std::to_string(out.rate_limit));
  }
  if (!(out.rate_burst >= 1 && out.rate_burst <= 1e9)) {
    why = "must be from 1 to 1e9";
    return fail("rate-burst", std::to_string(out.rate_burst));
  }
  const auto level = vm["log-level"].as<std::string>();
  if (!log::parse_level(level, out.log_level)) {
    why = "expected error, warning, notice, info or debug";
    return fail("log-level", level);
  }
  out.db = vm.count("db") ? vm["db"].as<std::string>() : default_db();
  if (vm.count("auth-token-file")) {
    out.auth_token_file = vm["auth-token-file"].as<std::string>();
    std::ifstream in(*out.auth_token_file);
    if (!in) {
      why = "cannot be read";
      return fail("auth-token-file", *out.auth_token_file);
    }
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty() && line.front() != '#') out.auth_tokens.push_back(line);
    }
    if (out.auth_tokens.empty()) {
      why = "holds no token";
      return fail("auth-token-file", *out.auth_token_file);
    }
  }
  if (vm.count("cors-origin")) out.cors_origins = vm["cors-origin"].as<std::vector<std::string>>();
  // Read signed: an unsigned option would take "-1" as a huge count.
  const long long connections = vm["max-connections"].as<long long>();
  if (connections < 1 || connections > 1'000'000) {
    why = "must be from 1 to 1000000";
    return fail("max-connections", std::to_string(connections));
  }
  out.max_connections = static_cast<std::size_t>(connections);
  const long long clients = vm["rate-clients"].as<long long>();
  if (clients < 1 || clients > 10'000'000) {
    why = "must be from 1 to 10000000";
    return fail("rate-clients", std::to_string(clients));
  }
  out.rate_clients = static_cast<std::size_t>(clients);
  const double body_cache_mib = vm["body-cache-mb"].as<double>();
  if (!(body_cache_mib >= 0 && body_cache_mib <= 65536)) {
    why = "must be from 0 (keep every body) to 65536 MiB";
    return fail("body-cache-mb", std::to_string(body_cache_mib));
  }
  out.body_cache_bytes = static_cast<std::size_t>(body_cache_mib * 1024 * 1024);
  out.rebuild_index = vm.count("rebuild-index") > 0;
  if (vm.count("demo")) out.demo_dir = vm["demo"].as<std::string>();
  if (out.watch.empty() && out.jobs.empty() && !out.demo_dir) {
    std::cerr << "ckptd: nothing to watch: give --watch DIR, --job UUID=DIR or --demo DIR"
                 " (see --help)\n";
    return false;
  }
  return true;
}

}  // namespace

outcome parse(int argc, char** argv, settings& out) {
  const auto description = describe();
  po::variables_map vm;
  for (int i = 1; i < argc; ++i) {
    if (has_placeholder(argv[i])) {
      std::cerr << "ckptd: '%name%' sequences are not allowed in options: " << argv[i] << "\n";
      return outcome::exit_failure;
    }
  }
  try {
    po::store(po::parse_command_line(argc, argv, description), vm);
    if (vm.count("help")) {
      std::cout << "Usage: ckptd [OPTIONS]\n"
                   "Indexes the checkpoints that training jobs write and serves them as\n"
                   "llama-stack's GET /v1/post-training/job/artifacts.\n\n"
                << description << "\n";
      return outcome::exit_success;
    }
    if (vm.count("version")) {
      std::cout << "ckptd " << CKPTD_VERSION << "\n";
      return outcome::exit_success;
    }
    if (vm.count("config")) {
      const auto path = vm["config"].as<std::string>();
      out.config_file = path;
      std::ifstream file(path);
      if (!file) {
        std::cerr << "ckptd: cannot read config file " << path << "\n";
        return outcome::exit_failure;
      }
      std::stringstream text;
      text << file.rdbuf();
      std::istringstream lines(text.str());
      int number = 0;
      for (std::string line; std::getline(lines, line);) {
        ++number;
        if (has_placeholder(line)) {
          std::cerr << "ckptd: '%name%' sequences are not allowed (" << path << " line " << number
                    << ")\n";
          return outcome::exit_failure;
        }
      }
      // Stored after the command line, so options given there win.
      std::istringstream config(text.str());
      po::store(po::parse_config_file(config, description, /*allow_unregistered=*/false), vm);
    }
    po::notify(vm);
  } catch (const po::error_with_option_name& e) {
    std::string key = e.get_option_name();
    key.erase(0, key.find_first_not_of('-'));
    std::cerr << "ckptd: " << e.what() << where(out.config_file, key) << " (see --help)\n";
    return outcome::exit_failure;
  } catch (const po::error& e) {
    std::cerr << "ckptd: " << e.what() << " (see --help)\n";
    return outcome::exit_failure;
  }
  if (!interpret(vm, out)) return outcome::exit_failure;
  if (vm.count("check-config")) {
    std::cout << "ckptd: configuration is valid\n";
    return outcome::exit_success;
  }
  return outcome::run;
}

}  // namespace ckptd::daemon
