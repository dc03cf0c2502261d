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

temp_dir::temp_dir(std::string_view tag) {
  const char* base = std::getenv("TMPDIR");
  std::string templ =
      (base && *base ? fs::path(base) : fs::path("/tmp")) / (std::string(tag) + "-XXXXXX");
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

}  // namespace ckptd::test
