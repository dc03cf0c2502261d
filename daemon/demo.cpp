#include "demo.hpp"

#include <ckptd/log.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace ckptd::daemon {
namespace {

constexpr int steps_per_epoch = 40;
constexpr int save_every_steps = 20;
constexpr int epochs = 3;
constexpr int keep_checkpoints = 2;
constexpr auto pause_between_saves = std::chrono::seconds(4);

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A tiny but well-formed safetensors file: one float32 tensor.
std::string tiny_safetensors() {
  const std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string out;
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out += std::string(4, '\0');
  return out;
}

double train_loss_at(int step) { return 2.5 * std::exp(-step / 60.0) + 0.8; }
double eval_loss_at(int step) { return train_loss_at(step) + 0.15; }

}  // namespace

demo_trainer::demo_trainer(std::filesystem::path runs_dir)
    : job_dir_(std::move(runs_dir) / "demo-job") {
  thread_ = std::thread([this] { run(); });
}

demo_trainer::~demo_trainer() {
  stop_ = true;
  thread_.join();
}

void demo_trainer::run() {
  std::error_code ec;
  std::filesystem::remove_all(job_dir_, ec);
  std::filesystem::create_directories(job_dir_, ec);
  log::notice("demo: training demo-job in ", job_dir_.string());
  std::vector<std::filesystem::path> saved;
  std::ostringstream history;  // log_history entries so far, comma-separated
  bool first_entry = true;
  auto add_entry = [&](const std::string& entry) {
    history << (first_entry ? "" : ",\n    ") << entry;
    first_entry = false;
  };
  for (int step = save_every_steps; step <= epochs * steps_per_epoch && !stop_;
       step += save_every_steps) {
    for (auto waited = std::chrono::milliseconds(0); waited < pause_between_saves && !stop_;
         waited += std::chrono::milliseconds(100)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (stop_) break;
    const double epoch = static_cast<double>(step) / steps_per_epoch;
    std::ostringstream train, eval;
    train << R"({"epoch": )" << epoch << R"(, "loss": )" << train_loss_at(step) << R"(, "step": )"
          << step << "}";
    eval << R"({"epoch": )" << epoch << R"(, "eval_loss": )" << eval_loss_at(step)
         << R"(, "step": )" << step << "}";
    add_entry(train.str());
    add_entry(eval.str());

    // Trainer's order: weights and config, optimizer state, trainer_state.json last.
    auto dir = job_dir_ / ("checkpoint-" + std::to_string(step));
    std::filesystem::create_directories(dir, ec);
    write_file(dir / "config.json", R"({"model_type": "demo"})");
    write_file(dir / "model.safetensors", tiny_safetensors());
    write_file(dir / "training_args.bin", "demo");
    std::ostringstream state;
    state << "{\n  \"epoch\": " << epoch << ",\n  \"global_step\": " << step
          << ",\n  \"log_history\": [\n    " << history.str()
          << "\n  ],\n  \"max_steps\": " << epochs * steps_per_epoch << "\n}\n";
    write_file(dir / "trainer_state.json", state.str());
    log::notice("demo: saved ", dir.filename().string());
    saved.push_back(dir);

    // save_total_limit: the oldest checkpoints go.
    while (saved.size() > keep_checkpoints) {
      std::filesystem::remove_all(saved.front(), ec);
      log::notice("demo: rotated away ", saved.front().filename().string());
      saved.erase(saved.begin());
    }
  }
  if (!stop_) log::notice("demo: training finished");
}

}  // namespace ckptd::daemon
