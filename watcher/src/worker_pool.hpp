#pragma once
// A few threads that run jobs handed to them, oldest first. The watcher uses
// them to list and read checkpoints ahead of the engine, which stays
// single-threaded: jobs get copies of what they need and hand their results
// back through futures, never touching the engine's state.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ckptd::watcher {

class worker_pool {
 public:
  // Starts `threads` threads (at least one).
  explicit worker_pool(unsigned threads);
  // Drops the jobs not yet started (their futures report broken_promise) and
  // waits for those running.
  ~worker_pool();
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  // Runs f() on one of the threads; its result (or exception) arrives
  // through the future.
  template <typename F>
  std::future<std::invoke_result_t<F>> submit(F f) {
    auto task = std::make_shared<std::packaged_task<std::invoke_result_t<F>()>>(std::move(f));
    auto result = task->get_future();
    post([task] { (*task)(); });
    return result;
  }

  // Runs job() on one of the threads; nothing comes back.
  void post(std::function<void()> job);

  [[nodiscard]] std::size_t threads() const { return threads_.size(); }

 private:
  void work();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace ckptd::watcher
