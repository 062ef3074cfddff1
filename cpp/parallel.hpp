// Deterministic parallel loops over a batch of independent examples.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace reasonless {

// Resolves a requested thread count: <= 0 means every hardware thread.
inline int resolve_threads(int requested, int64_t work_items) {
  int t = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  if (t < 1) t = 1;
  if (work_items < t) t = static_cast<int>(std::max<int64_t>(work_items, 1));
  return t;
}

// Calls body(begin, end, worker) over [0, n) in chunks of `chunk` items handed out dynamically.
// Which worker runs which chunk varies between runs, so a body must write only to the slots of
// its own items (or to per-chunk buffers) for the result to be independent of the thread count.
template <class Body>
void parallel_chunks(int64_t n, int64_t chunk, int threads, Body body) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  threads = resolve_threads(threads, n_chunks);
  if (threads == 1) {
    for (int64_t c = 0; c < n_chunks; ++c) body(c * chunk, std::min(n, (c + 1) * chunk), 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_lock;
  auto worker = [&](int id) {
    try {
      for (int64_t c; (c = next.fetch_add(1)) < n_chunks;) body(c * chunk, std::min(n, (c + 1) * chunk), id);
    } catch (...) {
      std::lock_guard<std::mutex> g(error_lock);
      if (!error) error = std::current_exception();
      next = n_chunks;
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker, i);
  worker(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace reasonless
