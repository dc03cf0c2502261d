// gen_tree: writes a tree of finished Hugging Face Trainer checkpoints for
// ckptd's benchmarks, fast (plain open/write/close, no library).
//
//   gen_tree ROOT JOBS CHECKPOINTS [--files full|state] [--first-job N]
//            [--deadline-s S]
//
// ROOT/job-<NNNNN>/checkpoint-<step>/ for JOBS jobs of CHECKPOINTS each, step
// = 10 * k (k = 1..CHECKPOINTS), 100 steps per epoch. Each checkpoint gets,
// in the Trainer's order, config.json and model.safetensors (a tiny valid
// file: header length, JSON header, 8 data bytes) with `--files full` (the
// default), then trainer_state.json LAST. `--files state` writes only
// trainer_state.json (the smallest tree ckptd accepts as HF checkpoints).
//
// trainer_state.json is the Trainer's shape with a SHORT log_history (the
// loss and eval_loss entries at the checkpoint's own step, not the whole
// run): metrics come out right and the tree stays small.
//
// Prints "checkpoints <n>" and "seconds <t>". With --deadline-s it stops once
// that much time has passed and exits 3 (the tree is then smaller than asked).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

constexpr std::int64_t save_steps = 10;
constexpr std::int64_t steps_per_epoch = 100;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "gen_tree: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir " + path);
}

void write_file(const std::string& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + path);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("write " + path);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) die("close " + path);
}

std::string safetensors_file() {
  std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out;
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  out.append(8, '\0');
  return out;
}

constexpr std::string_view config_json =
    "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n  \"hidden_size\": 64,\n"
    "  \"model_type\": \"llama\",\n  \"num_hidden_layers\": 2,\n  \"torch_dtype\": \"float32\"\n}\n";

std::string number(double v) {
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%.4f", v);
  return std::string(text, static_cast<std::size_t>(n));
}

std::string trainer_state(std::int64_t step, std::int64_t max_steps) {
  const double epoch = static_cast<double>(step) / steps_per_epoch;
  const double loss = 2.0 * std::exp(-static_cast<double>(step) / 2000.0) + 0.5;
  const double eval_loss = loss + 0.1;
  const std::string e = number(epoch);
  const std::string s = std::to_string(step);
  std::string out;
  out.reserve(900);
  out += "{\n  \"best_metric\": null,\n  \"best_model_checkpoint\": null,\n  \"epoch\": " + e +
         ",\n  \"eval_steps\": " + std::to_string(save_steps) +
         ",\n  \"global_step\": " + s +
         ",\n  \"is_hyper_param_search\": false,\n  \"is_local_process_zero\": true,\n"
         "  \"is_world_process_zero\": true,\n  \"log_history\": [\n"
         "    {\n      \"epoch\": " + e + ",\n      \"grad_norm\": 0.87,\n"
         "      \"learning_rate\": 2e-05,\n      \"loss\": " + number(loss) +
         ",\n      \"step\": " + s + "\n    },\n"
         "    {\n      \"epoch\": " + e + ",\n      \"eval_loss\": " + number(eval_loss) +
         ",\n      \"eval_runtime\": 1.5,\n      \"step\": " + s + "\n    }\n  ],\n"
         "  \"logging_steps\": 10,\n  \"max_steps\": " + std::to_string(max_steps) +
         ",\n  \"num_input_tokens_seen\": 0,\n  \"num_train_epochs\": " +
         std::to_string((max_steps + steps_per_epoch - 1) / steps_per_epoch) +
         ",\n  \"save_steps\": " + std::to_string(save_steps) +
         ",\n  \"stateful_callbacks\": {},\n  \"total_flos\": 0,\n  \"train_batch_size\": 8,\n"
         "  \"trial_name\": null,\n  \"trial_params\": null\n}\n";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: gen_tree ROOT JOBS CHECKPOINTS [--files full|state] [--first-job N] "
                 "[--deadline-s S]\n");
    return 2;
  }
  const std::string root = argv[1];
  const long jobs = std::atol(argv[2]);
  const long checkpoints = std::atol(argv[3]);
  bool full = true;
  long first_job = 0;
  double deadline_s = 0;
  for (int i = 4; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--files") {
      full = std::string_view(argv[i + 1]) != "state";
    } else if (flag == "--first-job") {
      first_job = std::atol(argv[i + 1]);
    } else if (flag == "--deadline-s") {
      deadline_s = std::atof(argv[i + 1]);
    } else {
      std::fprintf(stderr, "gen_tree: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const auto started = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  const std::string weights = safetensors_file();
  const std::int64_t max_steps = save_steps * checkpoints;
  make_dir(root);
  long written = 0;
  bool late = false;
  for (long j = first_job; j < first_job + jobs && !late; ++j) {
    char name[32];
    std::snprintf(name, sizeof name, "/job-%05ld", j);
    const std::string job = root + name;
    make_dir(job);
    for (long k = 1; k <= checkpoints; ++k) {
      const std::int64_t step = save_steps * k;
      const std::string dir = job + "/checkpoint-" + std::to_string(step);
      make_dir(dir);
      if (full) {
        write_file(dir + "/config.json", config_json);
        write_file(dir + "/model.safetensors", weights);
      }
      write_file(dir + "/trainer_state.json", trainer_state(step, max_steps));
      ++written;
    }
    if (deadline_s > 0 && elapsed() > deadline_s) late = true;
  }
  std::printf("checkpoints %ld\nseconds %.3f\n", written, elapsed());
  return late && written < jobs * checkpoints ? 3 : 0;
}
