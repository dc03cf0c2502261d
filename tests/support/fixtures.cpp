#include "support/fixtures.hpp"

#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <stdexcept>
#include <system_error>

namespace ckptd::test {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& what, const fs::path& path) {
  throw std::system_error(errno, std::generic_category(), what + " " + path.string());
}

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write", path);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

double round4(double x) { return std::round(x * 10000.0) / 10000.0; }

// --- little-endian byte building --------------------------------------------

void put_le(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

std::uint32_t crc32(std::string_view data) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) c = table[(c ^ static_cast<unsigned char>(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// --- Python-style JSON ------------------------------------------------------

void dump(const boost::json::value& v, int indent, std::string& out) {
  const auto newline = [&](int level) {
    out.push_back('\n');
    out.append(static_cast<std::size_t>(level) * 2, ' ');
  };
  switch (v.kind()) {
    case boost::json::kind::null:
      out += "null";
      return;
    case boost::json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      return;
    case boost::json::kind::int64:
      out += std::to_string(v.get_int64());
      return;
    case boost::json::kind::uint64:
      out += std::to_string(v.get_uint64());
      return;
    case boost::json::kind::double_:
      out += python_float(v.get_double());
      return;
    case boost::json::kind::string:
      out += boost::json::serialize(v);
      return;
    case boost::json::kind::array: {
      const auto& a = v.get_array();
      if (a.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (std::size_t i = 0; i < a.size(); ++i) {
        newline(indent + 1);
        dump(a[i], indent + 1, out);
        if (i + 1 < a.size()) out.push_back(',');
      }
      newline(indent);
      out.push_back(']');
      return;
    }
    case boost::json::kind::object: {
      const auto& o = v.get_object();
      if (o.empty()) {
        out += "{}";
        return;
      }
      std::map<std::string_view, const boost::json::value*> sorted;
      for (const auto& kv : o) sorted.emplace(kv.key(), &kv.value());
      out.push_back('{');
      std::size_t i = 0;
      for (const auto& [key, value] : sorted) {
        newline(indent + 1);
        out += boost::json::serialize(boost::json::value(key));
        out += ": ";
        dump(*value, indent + 1, out);
        if (++i < sorted.size()) out.push_back(',');
      }
      newline(indent);
      out.push_back('}');
      return;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Files and bytes

void write_file(const fs::path& path, std::string_view bytes) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", path);
  try {
    write_all(fd, bytes, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail("cannot close", path);
}

void set_mtime(const fs::path& path, std::int64_t mtime_ns) {
  const struct timespec times[2] = {
      {0, UTIME_OMIT},
      {static_cast<time_t>(mtime_ns / 1'000'000'000), static_cast<long>(mtime_ns % 1'000'000'000)}};
  if (::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    fail("cannot set the mtime of", path);
  }
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::symlink_status(path, ec);
  if (ec || !fs::exists(status)) return;
  if (fs::is_directory(status)) {
    std::vector<fs::path> children;
    for (const auto& entry : fs::directory_iterator(path, ec)) children.push_back(entry.path());
    for (const auto& child : children) remove_tree(child);
  }
  fs::remove(path, ec);
}

std::string safetensors_bytes(std::size_t tensors, std::size_t floats_per_tensor) {
  boost::json::object header;
  header["__metadata__"] = boost::json::object{{"format", "pt"}};
  std::string data;
  for (std::size_t t = 0; t < tensors; ++t) {
    const std::size_t begin = data.size();
    for (std::size_t i = 0; i < floats_per_tensor; ++i) {
      const float value = static_cast<float>(t) + static_cast<float>(i) / 64.0f;
      std::uint32_t bits = 0;
      std::memcpy(&bits, &value, sizeof bits);
      put_le(data, bits, 4);
    }
    header["model.layers." + std::to_string(t) + ".weight"] =
        boost::json::object{{"dtype", "F32"},
                            {"shape", boost::json::array{floats_per_tensor}},
                            {"data_offsets", boost::json::array{begin, data.size()}}};
  }
  std::string text = boost::json::serialize(header);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out;
  put_le(out, text.size(), 8);
  return out + text + data;
}

std::string zip_bytes(std::size_t payload_bytes, bool zip64) {
  std::string payload;
  for (std::size_t i = 0; i < payload_bytes; ++i) payload.push_back(static_cast<char>(i * 7 + 3));
  // A pickle stub: protocol 2, an empty dict, STOP. Enough to look the part.
  const std::vector<std::pair<std::string, std::string>> entries = {
      {"archive/data.pkl", std::string("\x80\x02}q\x00.", 6)},
      {"archive/byteorder", "little"},
      {"archive/data/0", payload},
      {"archive/version", "3\n"},
  };
  constexpr std::uint16_t dos_date_1980_01_01 = 0x21;
  std::string out;
  std::string directory;
  for (const auto& [name, data] : entries) {
    const std::uint64_t local_at = out.size();
    const std::uint32_t crc = crc32(data);
    put_le(out, 0x04034b50, 4);  // local file header
    put_le(out, 20, 2);          // version needed
    put_le(out, 0, 2);           // flags
    put_le(out, 0, 2);           // stored
    put_le(out, 0, 2);           // time
    put_le(out, dos_date_1980_01_01, 2);
    put_le(out, crc, 4);
    put_le(out, data.size(), 4);
    put_le(out, data.size(), 4);
    put_le(out, name.size(), 2);
    put_le(out, 0, 2);  // extra field length
    out += name;
    out += data;

    put_le(directory, 0x02014b50, 4);  // central directory header
    put_le(directory, 20, 2);          // version made by
    put_le(directory, 20, 2);          // version needed
    put_le(directory, 0, 2);
    put_le(directory, 0, 2);
    put_le(directory, 0, 2);
    put_le(directory, dos_date_1980_01_01, 2);
    put_le(directory, crc, 4);
    put_le(directory, data.size(), 4);
    put_le(directory, data.size(), 4);
    put_le(directory, name.size(), 2);
    put_le(directory, 0, 2);  // extra
    put_le(directory, 0, 2);  // comment
    put_le(directory, 0, 2);  // disk
    put_le(directory, 0, 2);  // internal attributes
    put_le(directory, 0, 4);  // external attributes
    put_le(directory, local_at, 4);
    directory += name;
  }
  const std::uint64_t directory_at = out.size();
  out += directory;
  if (zip64) {
    const std::uint64_t record_at = out.size();
    put_le(out, 0x06064b50, 4);  // ZIP64 end of central directory record
    put_le(out, 44, 8);          // size of the rest of the record
    put_le(out, 45, 2);
    put_le(out, 45, 2);
    put_le(out, 0, 4);
    put_le(out, 0, 4);
    put_le(out, entries.size(), 8);
    put_le(out, entries.size(), 8);
    put_le(out, directory.size(), 8);
    put_le(out, directory_at, 8);
    put_le(out, 0x07064b50, 4);  // ZIP64 locator
    put_le(out, 0, 4);
    put_le(out, record_at, 8);
    put_le(out, 1, 4);
  }
  put_le(out, 0x06054b50, 4);  // end of central directory
  put_le(out, 0, 2);
  put_le(out, 0, 2);
  put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2);
  put_le(out, directory.size(), 4);
  put_le(out, directory_at, 4);
  put_le(out, 0, 2);  // comment length
  return out;
}

std::string python_json(const boost::json::value& value) {
  std::string out;
  dump(value, 0, out);
  return out;
}

std::string python_float(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // Shortest round-trip digits, then Python's repr layout: positional for
  // exponents -4..15, scientific with a signed two-digit exponent otherwise.
  std::array<char, 64> buf{};
  const auto [end, ec] =
      std::to_chars(buf.data(), buf.data() + buf.size(), value, std::chars_format::scientific);
  std::string_view text(buf.data(), static_cast<std::size_t>(end - buf.data()));
  std::string sign;
  if (text.front() == '-') {
    sign = "-";
    text.remove_prefix(1);
  }
  const auto e = text.find('e');
  std::string digits;
  for (const char ch : text.substr(0, e)) {
    if (ch != '.') digits.push_back(ch);
  }
  int exponent = 0;
  std::from_chars(text.data() + e + 1 + (text[e + 1] == '+'), text.data() + text.size(), exponent);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0)
      return sign + "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    const auto whole = static_cast<std::size_t>(exponent) + 1;
    if (digits.size() <= whole)
      return sign + digits + std::string(whole - digits.size(), '0') + ".0";
    return sign + digits.substr(0, whole) + "." + digits.substr(whole);
  }
  std::string mantissa = digits.substr(0, 1);
  if (digits.size() > 1) mantissa += "." + digits.substr(1);
  const std::string exp_digits = std::to_string(std::abs(exponent));
  return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + (exp_digits.size() < 2 ? "0" : "") +
         exp_digits;
}

namespace {

fs::path default_temp_base() {
  const char* base = std::getenv("TMPDIR");
  return base && *base ? fs::path(base) : fs::path("/tmp");
}

}  // namespace

temp_dir::temp_dir(std::string_view tag) : temp_dir(tag, default_temp_base()) {}

temp_dir::temp_dir(std::string_view tag, const fs::path& base) {
  std::string templ = base / (std::string(tag) + "-XXXXXX");
  if (!::mkdtemp(templ.data())) fail("cannot create a temporary folder", templ);
  path_ = templ;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

// ---------------------------------------------------------------------------
// Hugging Face Trainer

hf_run::hf_run(fs::path output_dir, hf_options options)
    : output_dir_(std::move(output_dir)), options_(options) {
  if (options_.steps_per_epoch <= 0 || options_.logging_steps <= 0) {
    throw std::logic_error("hf_run: steps_per_epoch and logging_steps must be positive");
  }
  fs::create_directories(output_dir_);
}

fs::path hf_run::checkpoint_dir(std::int64_t step) const {
  return output_dir_ / ("checkpoint-" + std::to_string(step));
}

fs::path hf_run::begin_save(std::int64_t step) {
  if (pending_) throw std::logic_error("hf_run: a save is already pending");
  if (step <= 0 || (!saved_.empty() && step <= saved_.back())) {
    throw std::logic_error("hf_run: save steps must be positive and increasing");
  }
  pending_ = step;
  fs::path dir = checkpoint_dir(step);
  // save_model: weights and config via save_pretrained, then training_args.
  if (options_.peft) {
    write_file(dir / "README.md", "---\nlibrary_name: peft\n---\n# Model card\n");
    write_file(dir / "adapter_model.safetensors", safetensors_bytes(4, 16));
    write_file(
        dir / "adapter_config.json",
        python_json(boost::json::object{{"peft_type", "LORA"},
                                        {"r", 8},
                                        {"lora_alpha", 16},
                                        {"target_modules", boost::json::array{"q_proj", "v_proj"}},
                                        {"task_type", "CAUSAL_LM"}}) +
            "\n");
  } else {
    write_file(dir / "config.json", python_json(boost::json::object{
                                        {"architectures", boost::json::array{"LlamaForCausalLM"}},
                                        {"hidden_size", 64},
                                        {"model_type", "llama"},
                                        {"num_hidden_layers", 2},
                                        {"torch_dtype", "float32"}}) +
                                        "\n");
    write_file(dir / "generation_config.json",
               python_json(boost::json::object{{"bos_token_id", 1}, {"eos_token_id", 2}}) + "\n");
    write_file(dir / "model.safetensors", safetensors_bytes(4, 32));
  }
  write_file(dir / "training_args.bin", zip_bytes(48));
  // Optimizer, scheduler and RNG state.
  write_file(dir / "optimizer.pt", zip_bytes(512));
  write_file(dir / "scheduler.pt", zip_bytes(32));
  write_file(dir / "rng_state.pth", zip_bytes(96));
  return dir;
}

std::vector<fs::path> hf_run::finish_save() {
  if (!pending_) throw std::logic_error("hf_run: finish_save without begin_save");
  const std::int64_t step = *pending_;
  write_file(checkpoint_dir(step) / "trainer_state.json", trainer_state_json(step));
  saved_.push_back(step);
  pending_.reset();
  return rotate();
}

fs::path hf_run::save(std::int64_t step) {
  fs::path dir = begin_save(step);
  finish_save();
  return dir;
}

void hf_run::write_truncated_trainer_state(std::size_t bytes) {
  if (!pending_) throw std::logic_error("hf_run: no pending save to truncate");
  const std::string text = trainer_state_json(*pending_);
  write_file(checkpoint_dir(*pending_) / "trainer_state.json",
             std::string_view(text).substr(0, std::min(bytes, text.size())));
}

std::string hf_run::trainer_state_json(std::int64_t step) const {
  const auto epoch_at = [this](std::int64_t s) {
    return static_cast<double>(s) / static_cast<double>(options_.steps_per_epoch);
  };
  std::vector<std::int64_t> eval_steps;
  if (options_.with_eval) {
    for (const auto s : saved_) {
      if (s < step) eval_steps.push_back(s);
    }
    eval_steps.push_back(step);
  }
  // Train entries every logging_steps; at a step that also evaluates, the
  // train entry comes first (the Trainer logs, then evaluates, then saves).
  boost::json::array history;
  auto next_eval = eval_steps.begin();
  const auto add_eval = [&](std::int64_t s) {
    history.push_back(boost::json::object{{"epoch", epoch_at(s)},
                                          {"eval_loss", eval_loss_at(s)},
                                          {"eval_runtime", 1.5},
                                          {"eval_samples_per_second", 64.0},
                                          {"eval_steps_per_second", 8.0},
                                          {"step", s}});
  };
  for (std::int64_t s = options_.logging_steps; s <= step; s += options_.logging_steps) {
    while (next_eval != eval_steps.end() && *next_eval < s) add_eval(*next_eval++);
    const double progress = static_cast<double>(s) / static_cast<double>(options_.steps_per_epoch *
                                                                         options_.num_train_epochs);
    history.push_back(boost::json::object{{"epoch", epoch_at(s)},
                                          {"grad_norm", round4(1.5 - progress)},
                                          {"learning_rate", 5e-05 * (1.0 - progress)},
                                          {"loss", train_loss_at(s)},
                                          {"step", s}});
  }
  while (next_eval != eval_steps.end()) add_eval(*next_eval++);

  boost::json::object state{
      {"best_global_step", nullptr},
      {"best_metric", nullptr},
      {"best_model_checkpoint", nullptr},
      {"epoch", epoch_at(step)},
      {"eval_steps", options_.with_eval ? boost::json::value(options_.steps_per_epoch) : nullptr},
      {"global_step", step},
      {"is_hyper_param_search", false},
      {"is_local_process_zero", true},
      {"is_world_process_zero", true},
      {"log_history", std::move(history)},
      {"logging_steps", options_.logging_steps},
      {"max_steps", options_.steps_per_epoch * options_.num_train_epochs},
      {"num_input_tokens_seen", 0},
      {"num_train_epochs", options_.num_train_epochs},
      {"save_steps", options_.steps_per_epoch},
      {"stateful_callbacks",
       boost::json::object{
           {"TrainerControl",
            boost::json::object{{"args", boost::json::object{{"should_epoch_stop", false},
                                                             {"should_evaluate", false},
                                                             {"should_log", false},
                                                             {"should_save", true},
                                                             {"should_training_stop", false}}},
                                {"attributes", boost::json::object{}}}}}},
      {"total_flos", 1.2e15 * static_cast<double>(step) / 100.0},
      {"train_batch_size", 8},
      {"trial_name", nullptr},
      {"trial_params", nullptr},
  };
  if (options_.with_eval) {
    // Losses only fall, so the best checkpoint is always the newest.
    state["best_global_step"] = step;
    state["best_metric"] = eval_loss_at(step);
    state["best_model_checkpoint"] = checkpoint_dir(step).string();
  }
  return python_json(state) + "\n";
}

double hf_run::train_loss_at(std::int64_t step) const {
  if (options_.nan_loss_from_step >= 0 && step >= options_.nan_loss_from_step) return std::nan("");
  return round4(0.5 + 1.5 * 500.0 / (500.0 + static_cast<double>(step)));
}

double hf_run::eval_loss_at(std::int64_t step) {
  return round4(0.625 + 1.5 * 500.0 / (500.0 + static_cast<double>(step)));
}

std::optional<double> hf_run::expected_train_loss(std::int64_t step) const {
  const std::int64_t logged = step - step % options_.logging_steps;
  if (logged <= 0) return std::nullopt;
  return train_loss_at(logged);
}

std::optional<double> hf_run::expected_validation_loss(std::int64_t step) const {
  if (!options_.with_eval) return std::nullopt;
  return eval_loss_at(step);
}

std::int64_t hf_run::expected_epoch(std::int64_t step) const {
  return step / options_.steps_per_epoch;
}

std::optional<expected_metrics> hf_run::expected_metrics_at(std::int64_t step) const {
  const auto train = expected_train_loss(step);
  const auto validation = expected_validation_loss(step);
  if (!train || !validation) return std::nullopt;
  const double perplexity = std::exp(*validation);
  if (!std::isfinite(*train) || !std::isfinite(*validation) || !std::isfinite(perplexity)) {
    return std::nullopt;
  }
  return expected_metrics{expected_epoch(step), *train, *validation, perplexity};
}

// Like Trainer._sorted_checkpoints(use_mtime=True) + _rotate_checkpoints.
std::vector<fs::path> hf_run::rotate() const {
  std::vector<fs::path> deleted;
  if (options_.save_total_limit <= 0) return deleted;
  struct entry {
    fs::path path;
    std::int64_t step;
    fs::file_time_type mtime;
  };
  std::vector<entry> checkpoints;
  for (const auto& item : fs::directory_iterator(output_dir_)) {
    const auto name = item.path().filename().string();
    constexpr std::string_view prefix = "checkpoint-";
    if (!item.is_directory() || name.rfind(prefix, 0) != 0) continue;
    const std::string_view digits = std::string_view(name).substr(prefix.size());
    std::int64_t step = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
    if (ec != std::errc() || end != digits.data() + digits.size()) continue;
    checkpoints.push_back({item.path(), step, item.last_write_time()});
  }
  if (checkpoints.size() <= static_cast<std::size_t>(options_.save_total_limit)) return deleted;
  std::sort(checkpoints.begin(), checkpoints.end(),
            [](const entry& a, const entry& b) { return a.mtime < b.mtime; });
  // Coarse or fake mtimes (FUSE, fast saves): fall back to the step number.
  if (checkpoints.back().mtime - checkpoints.front().mtime < std::chrono::seconds(1)) {
    std::sort(checkpoints.begin(), checkpoints.end(),
              [](const entry& a, const entry& b) { return a.step < b.step; });
  }
  const std::size_t excess =
      checkpoints.size() - static_cast<std::size_t>(options_.save_total_limit);
  for (std::size_t i = 0; i < excess; ++i) {
    remove_tree(checkpoints[i].path);
    deleted.push_back(checkpoints[i].path);
  }
  return deleted;
}

// ---------------------------------------------------------------------------
// llama-stack torchtune

torchtune_run::torchtune_run(fs::path checkpoint_root, torchtune_options options)
    : root_(std::move(checkpoint_root)), options_(std::move(options)) {
  if (options_.algorithm != "sft" && options_.algorithm != "dpo") {
    throw std::logic_error("torchtune_run: algorithm must be sft or dpo");
  }
  fs::create_directories(root_);
}

torchtune_run::~torchtune_run() { close_log(); }

fs::path torchtune_run::epoch_dir(std::string_view model, std::int64_t epoch) const {
  return root_ / (std::string(model) + "-" + options_.algorithm + "-" + std::to_string(epoch));
}

fs::path torchtune_run::begin_epoch(std::string_view model, std::int64_t epoch) {
  close_log();
  current_ = epoch_dir(model, epoch);
  const fs::path log_dir = current_ / "log";
  fs::create_directories(log_dir);
  log_path_ = log_dir / ("log_" + std::to_string(std::time(nullptr)) + ".txt");
  log_fd_ = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd_ < 0) fail("cannot create", log_path_);
  for (int i = 0; i < options_.steps_per_epoch; ++i) {
    ++global_step_;
    // DiskLogger: "Step N | k:v k:v ... " with a trailing space, flushed per line.
    const std::string line = "Step " + std::to_string(global_step_) +
                             " | loss:" + python_float(train_loss_at(global_step_)) +
                             " lr:2e-05 tokens_per_second_per_gpu:1543.2 peak_memory_active:12.5"
                             " grad_norm:tensor(0.8700) \n";
    write_all(log_fd_, line, log_path_);
  }
  return current_;
}

fs::path torchtune_run::finish_epoch() {
  if (current_.empty()) throw std::logic_error("torchtune_run: finish_epoch without begin_epoch");
  if (options_.format == torchtune_format::meta) {
    if (options_.copy_model_files) {
      write_file(current_ / "params.json",
                 R"({"dim": 3072, "n_layers": 28, "n_heads": 24, "vocab_size": 128256})");
      write_file(current_ / "tokenizer.model", std::string(256, 't'));
    }
    write_file(current_ / "consolidated.00.pth", zip_bytes(1024));
    write_file(current_ / "adapter" / "adapter.pth", zip_bytes(128));
  } else {
    write_file(current_ / "adapter_model.pt", zip_bytes(128));
    write_file(current_ / "adapter" / "adapter_model.safetensors", safetensors_bytes(4, 16));
    write_file(
        current_ / "adapter" / "adapter_config.json",
        R"({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"})");
    if (options_.copy_model_files) {
      write_file(current_ / "config.json", R"({"model_type": "llama", "hidden_size": 3072})");
      write_file(current_ / "generation_config.json", R"({"bos_token_id": 128000})");
      write_file(current_ / "tokenizer.json", R"({"version": "1.0"})");
    }
  }
  return current_;
}

void torchtune_run::close_log() {
  if (log_fd_ >= 0) {
    ::close(log_fd_);
    log_fd_ = -1;
  }
}

double torchtune_run::train_loss_at(std::int64_t step) {
  return round4(0.75 + 1.25 * 200.0 / (200.0 + static_cast<double>(step)));
}

// ---------------------------------------------------------------------------
// Manifest

std::string manifest_json(const manifest_fields& fields) {
  boost::json::object manifest;
  if (fields.identifier) manifest["identifier"] = *fields.identifier;
  if (fields.epoch) manifest["epoch"] = *fields.epoch;
  if (fields.step) manifest["step"] = *fields.step;
  if (fields.train_loss || fields.validation_loss) {
    boost::json::object metrics;
    if (fields.train_loss) metrics["train_loss"] = *fields.train_loss;
    if (fields.validation_loss) metrics["validation_loss"] = *fields.validation_loss;
    if (fields.perplexity) metrics["perplexity"] = *fields.perplexity;
    manifest["training_metrics"] = std::move(metrics);
  }
  return python_json(manifest) + "\n";
}

fs::path write_manifest_checkpoint(const fs::path& dir, const manifest_fields& fields) {
  return write_manifest_checkpoint_raw(dir, manifest_json(fields));
}

fs::path write_manifest_checkpoint_raw(const fs::path& dir, std::string_view manifest_text) {
  write_file(dir / "config.json", R"({"model_type": "llama"})");
  write_file(dir / "model.safetensors", safetensors_bytes(2, 16));
  write_file(dir / manifest_file_name, manifest_text);
  return dir;
}

// ---------------------------------------------------------------------------
// More bytes and file operations

namespace {

constexpr std::size_t tar_block = 512;
constexpr std::size_t tar_record = 10240;

void put_octal(std::string& header, std::size_t at, std::size_t width, std::uint64_t value) {
  // width-1 octal digits, zero padded, then NUL (as tarfile's itn()).
  std::string digits(width - 1, '0');
  for (std::size_t i = width - 1; i-- > 0 && value > 0; value >>= 3) {
    digits[i] = static_cast<char>('0' + (value & 7));
  }
  header.replace(at, width - 1, digits);
  header[at + width - 1] = '\0';
}

std::string tar_header(const std::string& name, std::size_t size) {
  std::string h(tar_block, '\0');
  h.replace(0, std::min<std::size_t>(name.size(), 99), name.substr(0, 99));
  put_octal(h, 100, 8, 0644);
  put_octal(h, 108, 8, 0);
  put_octal(h, 116, 8, 0);
  put_octal(h, 124, 12, size);
  put_octal(h, 136, 12, 1'700'000'000);
  h[156] = '0';
  h.replace(257, 6, std::string("ustar\0", 6));
  h.replace(263, 2, "00");
  h.replace(148, 8, std::string(8, ' '));
  std::uint64_t sum = 0;
  for (const char ch : h) sum += static_cast<unsigned char>(ch);
  // tarfile: "%06o\0 "
  std::string chk(6, '0');
  for (std::size_t i = 6; i-- > 0 && sum > 0; sum >>= 3)
    chk[i] = static_cast<char>('0' + (sum & 7));
  h.replace(148, 8, chk + std::string("\0 ", 2));
  return h;
}

std::string two_decimals(double x) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.2f", x);
  return buffer;
}

std::string four_decimals(double x) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.4f", x);
  return buffer;
}

std::string padded(std::int64_t value, int digits) {
  std::string s = std::to_string(value);
  if (static_cast<int>(s.size()) < digits)
    s.insert(0, static_cast<std::size_t>(digits) - s.size(), '0');
  return s;
}

// A numbered shard's name: model-00001-of-00002.safetensors.
std::string shard_name(int k, int n) {
  return "model-" + padded(k, 5) + "-of-" + padded(n, 5) + ".safetensors";
}

// Writes n shards and their index into `dir`, shards first.
void write_sharded_safetensors(const fs::path& dir, int n) {
  boost::json::object weight_map;
  for (int k = 1; k <= n; ++k) {
    write_file(dir / shard_name(k, n), safetensors_bytes(2, 8));
    weight_map["model.layers." + std::to_string(k) + ".weight"] = shard_name(k, n);
  }
  write_file(
      dir / "model.safetensors.index.json",
      python_json(boost::json::object{{"metadata", boost::json::object{{"total_size", 64 * n}}},
                                      {"weight_map", std::move(weight_map)}}) +
          "\n");
}

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string tar_bytes(const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out;
  for (const auto& [name, content] : members) {
    out += tar_header(name, content.size());
    out += content;
    out.append((tar_block - content.size() % tar_block) % tar_block, '\0');
  }
  out.append(2 * tar_block, '\0');
  out.append((tar_record - out.size() % tar_record) % tar_record, '\0');
  return out;
}

void write_and_rename(const fs::path& staging, const fs::path& path, std::string_view bytes) {
  write_file(staging, bytes);
  fs::create_directories(path.parent_path());
  fs::rename(staging, path);
}

double fixture_train_loss(std::int64_t step) {
  return round4(0.75 + 1.25 * 200.0 / (200.0 + static_cast<double>(step)));
}

double fixture_validation_loss(std::int64_t epoch) {
  return round4(0.9 + 1.3 / (1.0 + 0.7 * static_cast<double>(epoch)));
}

// ---------------------------------------------------------------------------
// torchtune checkpointers

torchtune_checkpointer_run::torchtune_checkpointer_run(fs::path output_dir,
                                                       torchtune_checkpointer_options options)
    : output_dir_(std::move(output_dir)), options_(std::move(options)) {
  if (options_.dir_prefix != "epoch" && options_.dir_prefix != "step") {
    throw std::logic_error("torchtune_checkpointer_run: dir_prefix must be epoch or step");
  }
  fs::create_directories(output_dir_);
}

torchtune_checkpointer_run::~torchtune_checkpointer_run() {
  if (log_fd_ >= 0) ::close(log_fd_);
}

fs::path torchtune_checkpointer_run::checkpoint_dir(std::int64_t k) const {
  return output_dir_ / (options_.dir_prefix + "_" + std::to_string(k));
}

void torchtune_checkpointer_run::train_steps(std::int64_t steps) {
  if (log_fd_ < 0) {
    fs::create_directories(output_dir_ / "logs");
    log_path_ =
        output_dir_ / "logs" /
        ("log_" + std::to_string(std::time(nullptr)) + (options_.jsonl_log ? ".jsonl" : ".txt"));
    log_fd_ = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd_ < 0) fail("cannot create", log_path_);
  }
  for (std::int64_t i = 0; i < steps; ++i) {
    ++global_step_;
    const std::string loss = python_float(loss_at(global_step_));
    const std::string line =
        options_.jsonl_log
            ? "{\"step\": " + std::to_string(global_step_) + ", \"loss\": " + loss +
                  ", \"lr\": 2e-05, \"tokens_per_second_per_gpu\": 1543.2}\n"
            : "Step " + std::to_string(global_step_) + " | loss:" + loss +
                  " lr:2e-05 tokens_per_second_per_gpu:1543.2 grad_norm:tensor(0.87, "
                  "device='cuda:0') \n";
    write_all(log_fd_, line, log_path_);
  }
}

fs::path torchtune_checkpointer_run::begin_save(std::int64_t k) {
  if (pending_) throw std::logic_error("torchtune_checkpointer_run: a save is pending");
  pending_ = k;
  const fs::path dir = checkpoint_dir(k);
  write_sharded_safetensors(dir, options_.shards);
  if (options_.lora) {
    write_file(dir / "adapter_model.pt", zip_bytes(128));
    fs::create_directories(dir / "adapter_model");  // torchtune's empty-folder quirk
    write_file(dir / "adapter_model.safetensors", safetensors_bytes(4, 16));
    write_file(
        dir / "adapter_config.json",
        R"({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"})");
  }
  write_file(dir / "config.json", R"({"model_type": "llama", "hidden_size": 3072})");
  write_file(dir / "generation_config.json", R"({"bos_token_id": 128000})");
  write_file(dir / "tokenizer.json", R"({"version": "1.0"})");
  return dir;
}

std::vector<fs::path> torchtune_checkpointer_run::finish_save(bool intermediate) {
  if (!pending_) throw std::logic_error("torchtune_checkpointer_run: finish_save without begin");
  if (intermediate) write_file(checkpoint_dir(*pending_) / "recipe_state.pt", zip_bytes(256));
  saved_.push_back(*pending_);
  pending_.reset();
  std::vector<fs::path> pruned;
  if (options_.keep_last_n <= 0) return pruned;
  // Sorted by the number in the name; all but the newest N are removed.
  std::vector<std::int64_t> present;
  for (const auto k : saved_) {
    if (fs::exists(checkpoint_dir(k))) present.push_back(k);
  }
  std::sort(present.begin(), present.end());
  while (present.size() > static_cast<std::size_t>(options_.keep_last_n)) {
    remove_tree(checkpoint_dir(present.front()));
    pruned.push_back(checkpoint_dir(present.front()));
    present.erase(present.begin());
  }
  return pruned;
}

fs::path torchtune_checkpointer_run::save(std::int64_t k, bool intermediate) {
  auto dir = begin_save(k);
  finish_save(intermediate);
  return dir;
}

// ---------------------------------------------------------------------------
// Lightning

lightning_run::lightning_run(fs::path root, fs::path staging_dir, lightning_options options)
    : version_dir_(std::move(root) / "lightning_logs" / "version_0"),
      staging_dir_(std::move(staging_dir)),
      options_(options) {
  write_file(version_dir_ / "hparams.yaml", "lr: 2.0e-05\nbatch_size: 8\n");
  fs::create_directories(version_dir_ / "checkpoints");
  fs::create_directories(staging_dir_);
}

std::string lightning_run::checkpoint_name(std::int64_t epoch, std::int64_t step) const {
  std::string name = "epoch=" + std::to_string(epoch) + "-step=" + std::to_string(step);
  if (options_.val_loss_in_name) name += "-val_loss=" + two_decimals(name_val_loss(epoch));
  return name + ".ckpt";
}

double lightning_run::name_val_loss(std::int64_t epoch) {
  return std::stod(two_decimals(fixture_validation_loss(epoch)));
}

void lightning_run::log_epoch(std::int64_t epoch, std::int64_t step) {
  csv_rows_.push_back(
      {std::to_string(epoch), std::to_string(step), python_float(fixture_train_loss(step)), ""});
  csv_rows_.push_back({std::to_string(epoch), std::to_string(step), "",
                       python_float(fixture_validation_loss(epoch))});
  write_csv();
}

void lightning_run::write_csv() const {
  std::string text = "epoch,step,train_loss,val_loss\n";
  for (const auto& row : csv_rows_)
    text += row[0] + "," + row[1] + "," + row[2] + "," + row[3] + "\n";
  write_file(version_dir_ / "metrics.csv", text);
}

void lightning_run::write_ckpt(const fs::path& path, std::size_t payload) {
  const std::string bytes = zip_bytes(payload);
  if (options_.rename_into_place) {
    write_and_rename(staging_dir_ / ("tmp" + std::to_string(staged_++) + ".ckpt"), path, bytes);
  } else {
    // Straight to the final name: it grows in two writes (two closes).
    write_file(path, std::string_view(bytes).substr(0, bytes.size() / 2));
    write_file(path, bytes);
  }
}

fs::path lightning_run::save(std::int64_t epoch, std::int64_t step) {
  fs::path path = checkpoints_dir() / checkpoint_name(epoch, step);
  for (int v = 1; fs::exists(path); ++v) {  // the version counter on a collision
    const auto name = checkpoint_name(epoch, step);
    path =
        checkpoints_dir() / (name.substr(0, name.size() - 5) + "-v" + std::to_string(v) + ".ckpt");
  }
  write_ckpt(path, 256 + static_cast<std::size_t>(step % 97));
  if (options_.save_last)
    write_ckpt(checkpoints_dir() / "last.ckpt", 256 + static_cast<std::size_t>(step % 89));
  keep_top(fixture_validation_loss(epoch), path);
  return path;
}

void lightning_run::keep_top(double val_loss, const fs::path& path) {
  top_.emplace_back(val_loss, path);
  if (options_.save_top_k < 0 || top_.size() <= static_cast<std::size_t>(options_.save_top_k))
    return;
  auto worst = std::max_element(top_.begin(), top_.end(),
                                [](const auto& a, const auto& b) { return a.first < b.first; });
  std::error_code ec;
  fs::remove(worst->second, ec);
  top_.erase(worst);
}

fs::path lightning_run::begin_copy(std::int64_t epoch, std::int64_t step) {
  const fs::path path = checkpoints_dir() / checkpoint_name(epoch, step);
  const std::string bytes = zip_bytes(512);
  write_file(path, std::string_view(bytes).substr(0, bytes.size() / 2));
  copying_ = path;
  copying_epoch_ = epoch;
  return path;
}

void lightning_run::finish_copy() {
  if (!copying_) throw std::logic_error("lightning_run: finish_copy without begin_copy");
  write_file(*copying_, zip_bytes(512));
  keep_top(fixture_validation_loss(copying_epoch_), *copying_);
  copying_.reset();
}

fs::path lightning_run::save_deepspeed_folder(std::int64_t epoch, std::int64_t step, bool finish) {
  const fs::path dir = checkpoints_dir() / checkpoint_name(epoch, step);
  write_file(dir / "checkpoint" / "mp_rank_00_model_states.pt", zip_bytes(256));
  write_file(dir / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", zip_bytes(128));
  write_file(dir / "zero_to_fp32.py", "# recovery script\n");
  if (finish) write_file(dir / "latest", "checkpoint");
  return dir;
}

fs::path lightning_run::save_fsdp_folder(std::int64_t epoch, std::int64_t step, bool finish) {
  const fs::path dir = checkpoints_dir() / checkpoint_name(epoch, step);
  write_file(dir / "__0_0.distcp", std::string(300, 'a'));
  write_file(dir / "__1_0.distcp", std::string(300, 'b'));
  write_and_rename(dir / ".metadata.tmp", dir / ".metadata", std::string(64, 'm'));
  if (finish) write_file(dir / "meta.pt", zip_bytes(64));
  return dir;
}

// ---------------------------------------------------------------------------
// DeepSpeed

deepspeed_run::deepspeed_run(fs::path save_dir, deepspeed_options options)
    : save_dir_(std::move(save_dir)), options_(options) {
  fs::create_directories(save_dir_);
}

fs::path deepspeed_run::tag_dir(std::int64_t step) const {
  return save_dir_ / ("global_step" + std::to_string(step));
}

fs::path deepspeed_run::begin_save(std::int64_t step) {
  if (pending_) throw std::logic_error("deepspeed_run: a save is pending");
  pending_ = step;
  const fs::path dir = tag_dir(step);
  write_file(dir / "mp_rank_00_model_states.pt", zip_bytes(512));
  const int written = options_.data_parallel_ranks - (options_.late_last_rank ? 1 : 0);
  for (int r = 0; r < written; ++r) {
    write_file(dir / ("zero_pp_rank_" + std::to_string(r) + "_mp_rank_00_optim_states.pt"),
               zip_bytes(256));
  }
  write_file(save_dir_ / "zero_to_fp32.py", "#!/usr/bin/env python\n# recovery script\n");
  if (options_.late_last_rank) late_ = step;
  return dir;
}

void deepspeed_run::finish_save() {
  if (!pending_) throw std::logic_error("deepspeed_run: finish_save without begin_save");
  write_file(save_dir_ / "latest", "global_step" + std::to_string(*pending_));
  pending_.reset();
}

void deepspeed_run::land_late_shards() {
  if (!late_) return;
  const int r = options_.data_parallel_ranks - 1;
  write_file(
      tag_dir(*late_) / ("zero_pp_rank_" + std::to_string(r) + "_mp_rank_00_optim_states.pt"),
      zip_bytes(256));
  late_.reset();
}

fs::path deepspeed_run::save(std::int64_t step) {
  auto dir = begin_save(step);
  finish_save();
  return dir;
}

void deepspeed_run::write_latest_raw(std::string_view text) {
  write_file(save_dir_ / "latest", text);
}

// ---------------------------------------------------------------------------
// Megatron-LM

megatron_run::megatron_run(fs::path save_dir, megatron_options options)
    : save_dir_(std::move(save_dir)), options_(options) {
  fs::create_directories(save_dir_);
}

fs::path megatron_run::iteration_dir(std::int64_t iteration) const {
  return save_dir_ / ("iter_" + padded(iteration, 7));
}

fs::path megatron_run::tracker() const { return save_dir_ / "latest_checkpointed_iteration.txt"; }

fs::path megatron_run::begin_save(std::int64_t iteration) {
  if (pending_) throw std::logic_error("megatron_run: a save is pending");
  pending_ = iteration;
  const fs::path dir = iteration_dir(iteration);
  if (options_.dist_ckpt) {
    for (int r = 0; r < options_.ranks; ++r) {
      write_file(dir / ("__" + std::to_string(r) + "_0.distcp"), std::string(400, 'd'));
    }
    write_and_rename(dir / ".metadata.tmp", dir / ".metadata", std::string(96, 'm'));
    write_file(
        dir / "metadata.json",
        R"({"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", "common_backend_version": 1})");
  } else {
    for (int r = 0; r < options_.ranks; ++r) {
      write_file(dir / ("mp_rank_0" + std::to_string(r)) / "model_optim_rng.pt", zip_bytes(300));
    }
  }
  return dir;
}

std::vector<fs::path> megatron_run::finish_save() {
  if (!pending_) throw std::logic_error("megatron_run: finish_save without begin_save");
  const auto previous = tracked_;
  write_file(tracker(), std::to_string(*pending_));
  tracked_ = pending_;
  pending_.reset();
  std::vector<fs::path> deleted;
  if (options_.retain_interval > 0 && previous && *previous % options_.retain_interval != 0) {
    remove_tree(iteration_dir(*previous));
    deleted.push_back(iteration_dir(*previous));
  }
  return deleted;
}

fs::path megatron_run::save(std::int64_t iteration) {
  auto dir = begin_save(iteration);
  finish_save();
  return dir;
}

void megatron_run::write_tracker_raw(std::string_view text) { write_file(tracker(), text); }

// ---------------------------------------------------------------------------
// torchtitan / DCP

torchtitan_run::torchtitan_run(fs::path dump_folder, torchtitan_options options)
    : folder_(std::move(dump_folder) / "checkpoint"), options_(options) {
  fs::create_directories(folder_);
}

fs::path torchtitan_run::step_dir(std::int64_t step) const {
  return folder_ / ("step-" + std::to_string(step));
}

fs::path torchtitan_run::begin_save(std::int64_t step) {
  if (pending_) throw std::logic_error("torchtitan_run: a save is pending");
  pending_ = step;
  const fs::path dir = step_dir(step);
  for (int r = 0; r < options_.ranks; ++r) {
    write_file(dir / ("__" + std::to_string(r) + "_0.distcp"),
               std::string(500 + static_cast<std::size_t>(step % 13), static_cast<char>('a' + r)));
  }
  return dir;
}

std::vector<fs::path> torchtitan_run::finish_save() {
  if (!pending_) throw std::logic_error("torchtitan_run: finish_save without begin_save");
  const fs::path dir = step_dir(*pending_);
  write_file(dir / ".metadata.tmp", std::string(128, 'M'));
  std::error_code ec;
  fs::remove(dir / ".metadata", ec);
  fs::rename(dir / ".metadata.tmp", dir / ".metadata");
  if (std::find(saved_.begin(), saved_.end(), *pending_) == saved_.end())
    saved_.push_back(*pending_);
  pending_.reset();
  std::vector<fs::path> purged;
  if (options_.keep_latest_k <= 0) return purged;
  std::sort(saved_.begin(), saved_.end());
  while (saved_.size() > static_cast<std::size_t>(options_.keep_latest_k)) {
    remove_tree(step_dir(saved_.front()));
    purged.push_back(step_dir(saved_.front()));
    saved_.erase(saved_.begin());
  }
  return purged;
}

fs::path torchtitan_run::save(std::int64_t step) {
  auto dir = begin_save(step);
  finish_save();
  return dir;
}

fs::path torchtitan_run::save_hf(std::int64_t step) {
  const fs::path dir = step_dir(step);
  const fs::path staging = dir / "sharded";
  constexpr int shards = 2;
  for (int k = 1; k <= shards; ++k)
    write_file(staging / shard_name(k, shards), safetensors_bytes(2, 8));
  for (int k = 1; k <= shards; ++k)
    fs::rename(staging / shard_name(k, shards), dir / shard_name(k, shards));
  boost::json::object weight_map;
  for (int k = 1; k <= shards; ++k)
    weight_map["layers." + std::to_string(k) + ".weight"] = shard_name(k, shards);
  write_file(dir / "model.safetensors.index.json",
             python_json(boost::json::object{{"weight_map", std::move(weight_map)}}) + "\n");
  remove_tree(staging);
  saved_.push_back(step);
  return dir;
}

// ---------------------------------------------------------------------------
// Orbax

orbax_run::orbax_run(fs::path directory, orbax_options options)
    : directory_(std::move(directory)), options_(std::move(options)) {
  fs::create_directories(directory_);
}

fs::path orbax_run::step_dir(std::int64_t step) const {
  const std::string number = padded(step, options_.step_digits);
  return directory_ / (options_.step_prefix.empty() ? number : options_.step_prefix + "_" + number);
}

namespace {

std::string orbax_metadata(const boost::json::object& metrics, std::int64_t init_ns,
                           std::optional<std::int64_t> commit_ns) {
  boost::json::object m{
      {"item_handlers",
       boost::json::object{
           {"default",
            "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler"}}},
      {"metrics", metrics},
      {"performance_metrics", boost::json::object{}},
      {"init_timestamp_nsecs", init_ns},
      {"commit_timestamp_nsecs",
       commit_ns ? boost::json::value(*commit_ns) : boost::json::value(nullptr)},
      {"custom_metadata", boost::json::object{}}};
  return python_json(m);
}

void write_orbax_item(const fs::path& item) {
  write_file(item / "_METADATA", R"j({"tree_metadata": {"('params',)": {"key_metadata": []}}})j");
  write_file(item / "_sharding", "{}");
  write_file(item / "d" / "0a1b2c3d", std::string(200, 'x'));
  write_file(item / "manifest.ocdbt", std::string(64, 'o'));
}

}  // namespace

fs::path orbax_run::begin_save(std::int64_t step, boost::json::object metrics) {
  if (pending_) throw std::logic_error("orbax_run: a save is pending");
  pending_ = step;
  pending_metrics_ = metrics;
  const fs::path final_dir = step_dir(step);
  const std::int64_t init_ns = wall_ns();
  if (options_.protocol == orbax_protocol::atomic_rename) {
    const fs::path tmp = final_dir.string() + ".orbax-checkpoint-tmp";
    // Item folders carry the suffix too, and are renamed inside the tmp folder.
    write_orbax_item(tmp / "default.orbax-checkpoint-tmp");
    fs::rename(tmp / "default.orbax-checkpoint-tmp", tmp / "default");
    if (!metrics.empty()) write_file(tmp / "metrics" / "metrics", python_json(metrics));
    write_file(tmp / "_CHECKPOINT_METADATA", orbax_metadata(metrics, init_ns, std::nullopt));
    return tmp;
  }
  write_file(final_dir / "_CHECKPOINT_METADATA", orbax_metadata(metrics, init_ns, std::nullopt));
  write_orbax_item(final_dir / "default");
  if (!metrics.empty()) write_file(final_dir / "metrics" / "metrics", python_json(metrics));
  return final_dir;
}

std::vector<fs::path> orbax_run::finish_save() {
  if (!pending_) throw std::logic_error("orbax_run: finish_save without begin_save");
  const std::int64_t step = *pending_;
  const fs::path final_dir = step_dir(step);
  const std::int64_t commit_ns = wall_ns();
  const fs::path dir = options_.protocol == orbax_protocol::atomic_rename
                           ? fs::path(final_dir.string() + ".orbax-checkpoint-tmp")
                           : final_dir;
  write_file(dir / "_CHECKPOINT_METADATA",
             orbax_metadata(pending_metrics_, commit_ns - 1000, commit_ns));
  if (options_.commit_success_file) {
    write_file(dir / "commit_success.txt",
               "Checkpoint commit was successful to " + final_dir.string());
  }
  if (options_.protocol == orbax_protocol::atomic_rename) fs::rename(dir, final_dir);
  saved_.emplace_back(step, commit_ns);
  pending_.reset();
  std::vector<fs::path> removed;
  if (options_.max_to_keep <= 0) return removed;
  std::size_t present = 0;
  for (const auto& entry : saved_) present += fs::exists(step_dir(entry.first)) ? 1 : 0;
  for (const auto& entry : saved_) {
    if (present <= static_cast<std::size_t>(options_.max_to_keep)) break;
    if (!fs::exists(step_dir(entry.first))) continue;
    remove_tree(step_dir(entry.first));
    removed.push_back(step_dir(entry.first));
    --present;
  }
  return removed;
}

fs::path orbax_run::save(std::int64_t step, boost::json::object metrics) {
  begin_save(step, std::move(metrics));
  finish_save();
  return step_dir(step);
}

std::int64_t orbax_run::commit_timestamp_ns(std::int64_t step) const {
  for (const auto& [s, ns] : saved_) {
    if (s == step) return ns;
  }
  throw std::logic_error("orbax_run: no such step saved");
}

// ---------------------------------------------------------------------------
// NeMo

nemo_run::nemo_run(fs::path checkpoints_dir, nemo_options options)
    : dir_(std::move(checkpoints_dir)), options_(std::move(options)) {
  fs::create_directories(dir_);
}

std::string nemo_run::dist_name(double val_loss, std::int64_t epoch, std::int64_t consumed,
                                bool last) const {
  return options_.name + "--val_loss=" + four_decimals(val_loss) +
         "-epoch=" + std::to_string(epoch) + "-consumed_samples=" + std::to_string(consumed) +
         ".0" + (last ? "-last" : "");
}

fs::path nemo_run::marker_of(const fs::path& checkpoint) const {
  std::string name = checkpoint.filename().string();
  for (const std::string_view ext : {".ckpt", ".nemo"}) {
    if (name.size() > ext.size() && name.ends_with(ext)) name.resize(name.size() - ext.size());
  }
  return checkpoint.parent_path() / (name + "-unfinished");
}

namespace {

void write_nemo2_checkpoint(const fs::path& dir) {
  write_file(dir / "weights" / "__0_0.distcp", std::string(300, 'w'));
  write_file(dir / "weights" / "__1_0.distcp", std::string(300, 'v'));
  write_and_rename(dir / "weights" / ".metadata.tmp", dir / "weights" / ".metadata",
                   std::string(80, 'm'));
  write_file(dir / "weights" / "metadata.json", R"({"sharded_backend": "torch_dist"})");
  write_file(dir / "context" / "io.json", R"({"root": {"type": "ref"}})");
  write_file(dir / "context" / "model.yaml", "_target_: nemo.collections.llm.gpt.model.GPTModel\n");
}

}  // namespace

fs::path nemo_run::begin_save(std::int64_t epoch, std::int64_t consumed) {
  if (pending_) throw std::logic_error("nemo_run: a save is pending");
  const fs::path dir = dir_ / dist_name(val_loss_at(epoch), epoch, consumed);
  write_file(marker_of(dir), "");
  write_nemo2_checkpoint(dir);
  pending_ = dir;
  top_.emplace_back(val_loss_at(epoch), dir);
  return dir;
}

std::vector<fs::path> nemo_run::finish_save() {
  if (!pending_) throw std::logic_error("nemo_run: finish_save without begin_save");
  const fs::path dir = *pending_;
  pending_.reset();
  fs::remove(marker_of(dir));
  std::vector<fs::path> removed;
  if (options_.save_last) {
    // The previous "-last" goes, the new one is a copy; both under a marker.
    std::vector<fs::path> old_last;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const auto name = entry.path().filename().string();
      if (entry.is_directory() && name.ends_with("-last")) old_last.push_back(entry.path());
    }
    for (const auto& path : old_last) {
      write_file(marker_of(path), "");
      remove_tree(path);
      fs::remove(marker_of(path));
      removed.push_back(path);
    }
    const fs::path last = dir.string() + "-last";
    write_file(marker_of(last), "");
    write_nemo2_checkpoint(last);
    fs::remove(marker_of(last));
  }
  if (options_.save_top_k > 0 && top_.size() > static_cast<std::size_t>(options_.save_top_k)) {
    auto worst = std::max_element(top_.begin(), top_.end(),
                                  [](const auto& a, const auto& b) { return a.first < b.first; });
    write_file(marker_of(worst->second), "");
    remove_tree(worst->second);
    fs::remove(marker_of(worst->second));
    removed.push_back(worst->second);
    top_.erase(worst);
  }
  return removed;
}

fs::path nemo_run::save(std::int64_t epoch, std::int64_t consumed) {
  auto dir = begin_save(epoch, consumed);
  finish_save();
  return dir;
}

fs::path nemo_run::save_ckpt(std::int64_t epoch) {
  const fs::path path = dir_ / (options_.name + "--val_loss=" + four_decimals(val_loss_at(epoch)) +
                                "-epoch=" + std::to_string(epoch) + ".ckpt");
  write_file(marker_of(path), "");
  write_file(path, zip_bytes(300));
  fs::remove(marker_of(path));
  return path;
}

fs::path nemo_run::begin_nemo() {
  const fs::path path = dir_ / (options_.name + ".nemo");
  if (fs::exists(path)) fs::rename(path, dir_ / (options_.name + "-v1.nemo"));
  const std::string bytes = tar_bytes({{"./model_config.yaml", "trainer:\n  devices: 1\n"},
                                       {"./model_weights.ckpt", zip_bytes(2048)},
                                       {"./tokenizer.model", std::string(700, 't')}});
  write_file(path, std::string_view(bytes).substr(0, 1536));
  nemo_pending_ = true;
  return path;
}

void nemo_run::finish_nemo() {
  if (!nemo_pending_) throw std::logic_error("nemo_run: finish_nemo without begin_nemo");
  const std::string bytes = tar_bytes({{"./model_config.yaml", "trainer:\n  devices: 1\n"},
                                       {"./model_weights.ckpt", zip_bytes(2048)},
                                       {"./tokenizer.model", std::string(700, 't')}});
  write_file(dir_ / (options_.name + ".nemo"), bytes);
  std::error_code ec;
  fs::remove(dir_ / (options_.name + "-v1.nemo"), ec);
  nemo_pending_ = false;
}

}  // namespace ckptd::test
