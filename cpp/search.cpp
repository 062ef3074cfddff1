#include "search.hpp"

#include <algorithm>

#include "names.hpp"

namespace reasonless {

bool parse_search_algorithm(std::string_view name, SearchAlgorithm* out) {
  return parse_enum_name(name, kSearchAlgorithmNames, out);
}

// Every frontier entry comes from a create (at most 4 per close, one close per cell) or is the start.
constexpr int kMaxFrontier = kDirs * kMaxCells + 1;

SearchSolver::SearchSolver()
    : g_(new uint16_t[kMaxCells]),
      closed_(new uint8_t[kMaxCells]),
      touched_(new int16_t[kMaxCells]),
      frontier_(new uint64_t[kMaxFrontier]),
      next_(new int32_t[kMaxFrontier]),
      head_(new int32_t[kMaxCells]),
      tail_(new int32_t[kMaxCells]) {
  std::fill(head_.get(), head_.get() + kMaxCells, -1);
  std::fill(g_.get(), g_.get() + kMaxCells, kUnreached);
  std::fill(closed_.get(), closed_.get() + kMaxCells, uint8_t{0});
}

void SearchSolver::reset(int n_touched) {
  for (int i = 0; i < n_touched; ++i) {
    g_[touched_[i]] = kUnreached;
    closed_[touched_[i]] = 0;
  }
}

namespace {

inline uint16_t* emit(uint16_t* out, int cell, bool close, int g, int h) {
  out[0] = static_cast<uint16_t>(close ? (cell | kCloseBit) : cell);
  out[1] = static_cast<uint16_t>(g);
  out[2] = static_cast<uint16_t>(h);
  return out + 3;
}

// The in-grid neighbours of (x, y) in up, right, down, left order, with their coordinates: one
// division per expansion instead of one per neighbour.
struct Neighbours {
  int n = 0;
  int cell[kDirs], x[kDirs], y[kDirs];
  Neighbours(const GridView& grid, int c, int cx, int cy) {
    for (int d = 0; d < kDirs; ++d) {
      const int nx = cx + kDx[d], ny = cy + kDy[d];
      if (nx < 0 || nx >= grid.cols || ny < 0 || ny >= grid.rows) continue;
      const int nb = c + kDy[d] * grid.cols + kDx[d];
      if (grid.walls[nb]) continue;
      cell[n] = nb;
      x[n] = nx;
      y[n] = ny;
      ++n;
    }
  }
};

}  // namespace

int SearchSolver::run_bfs(const GridView& grid, int start, int goal, uint16_t* ops) {
  uint16_t* g = g_.get();
  int16_t* touched = touched_.get();
  uint64_t* queue = frontier_.get();
  const int cols = grid.cols, gx = goal % cols, gy = goal / cols;
  int n_touched = 0, head = 0, tail = 0;
  uint16_t* out = ops;
  g[start] = 0;
  touched[n_touched++] = static_cast<int16_t>(start);
  queue[tail++] = static_cast<uint64_t>(start);
  while (head < tail) {
    const int c = static_cast<int>(queue[head++]);
    const int cx = c % cols, cy = c / cols;
    out = emit(out, c, true, g[c], manhattan(cx, cy, gx, gy));
    if (c == goal) break;
    const int ng = g[c] + 1;
    const Neighbours nbs(grid, c, cx, cy);
    for (int k = 0; k < nbs.n; ++k) {
      const int nb = nbs.cell[k];
      if (g[nb] != kUnreached) continue;
      g[nb] = static_cast<uint16_t>(ng);
      touched[n_touched++] = static_cast<int16_t>(nb);
      queue[tail++] = static_cast<uint64_t>(nb);
      out = emit(out, nb, false, ng, manhattan(nbs.x[k], nbs.y[k], gx, gy));
    }
  }
  reset(n_touched);
  return static_cast<int>((out - ops) / 3);
}

int SearchSolver::run_dfs(const GridView& grid, int start, int goal, uint16_t* ops) {
  uint8_t* closed = closed_.get();
  int16_t* touched = touched_.get();
  uint64_t* stack = frontier_.get();  // entries: cell | g << 12
  const int cols = grid.cols, gx = goal % cols, gy = goal / cols;
  int n_touched = 0, top = 0;
  uint16_t* out = ops;
  stack[top++] = static_cast<uint64_t>(start);
  while (top > 0) {
    const uint64_t e = stack[--top];
    const int c = static_cast<int>(e & 0xFFF), gc = static_cast<int>(e >> 12);
    if (closed[c]) continue;  // reached again by a longer-lived entry: visited is marked at pop
    closed[c] = 1;
    touched[n_touched++] = static_cast<int16_t>(c);
    const int cx = c % cols, cy = c / cols;
    out = emit(out, c, true, gc, manhattan(cx, cy, gx, gy));
    if (c == goal) break;
    const int ng = gc + 1;
    const Neighbours nbs(grid, c, cx, cy);
    for (int k = 0; k < nbs.n; ++k) {
      const int nb = nbs.cell[k];
      if (closed[nb]) continue;
      stack[top++] = static_cast<uint64_t>(nb) | static_cast<uint64_t>(ng) << 12;
      out = emit(out, nb, false, ng, manhattan(nbs.x[k], nbs.y[k], gx, gy));
    }
  }
  reset(n_touched);
  return static_cast<int>((out - ops) / 3);
}

// The open list is a bucket queue keyed by the priority (h for greedy, g for dijkstra; both below
// kMaxCells): appending to a bucket's tail and taking from the lowest non-empty bucket's head pops
// the smallest (priority, insertion order), i.e. ties first-in first-out, in O(1) per operation.
template <bool kByG>
int SearchSolver::run_best_first(const GridView& grid, int start, int goal, uint16_t* ops) {
  uint16_t* g = g_.get();
  uint8_t* closed = closed_.get();
  int16_t* touched = touched_.get();
  uint64_t* entry_cell = frontier_.get();
  int32_t* next = next_.get();
  int32_t* head = head_.get();
  int32_t* tail = tail_.get();
  const int cols = grid.cols, gx = goal % cols, gy = goal / cols;
  int n_touched = 0, n_entries = 0, lowest = kMaxCells, highest = -1;
  uint16_t* out = ops;
  auto push = [&](int cell, int prio) {
    const int e = n_entries++;
    entry_cell[e] = static_cast<uint64_t>(cell);
    next[e] = -1;
    if (head[prio] < 0)
      head[prio] = e;
    else
      next[tail[prio]] = e;
    tail[prio] = e;
    lowest = std::min(lowest, prio);  // greedy can push below the bucket it pops from
    highest = std::max(highest, prio);
  };
  g[start] = 0;
  touched[n_touched++] = static_cast<int16_t>(start);
  push(start, kByG ? 0 : manhattan(start % cols, start / cols, gx, gy));
  for (;;) {
    while (lowest <= highest && head[lowest] < 0) ++lowest;
    if (lowest > highest) break;
    const int e = head[lowest];
    head[lowest] = next[e];
    const int c = static_cast<int>(entry_cell[e]);
    if (closed[c]) continue;  // an entry superseded by an improved g (dijkstra only)
    closed[c] = 1;
    const int cx = c % cols, cy = c / cols;
    out = emit(out, c, true, g[c], manhattan(cx, cy, gx, gy));
    if (c == goal) break;
    const int ng = g[c] + 1;
    const Neighbours nbs(grid, c, cx, cy);
    for (int k = 0; k < nbs.n; ++k) {
      const int nb = nbs.cell[k];
      if (closed[nb]) continue;
      // greedy: pushed once, when first reached; dijkstra: whenever g improves.
      if (kByG ? ng >= g[nb] : g[nb] != kUnreached) continue;
      if (g[nb] == kUnreached) touched[n_touched++] = static_cast<int16_t>(nb);
      g[nb] = static_cast<uint16_t>(ng);
      const int h = manhattan(nbs.x[k], nbs.y[k], gx, gy);
      push(nb, kByG ? ng : h);
      out = emit(out, nb, false, ng, h);
    }
  }
  for (int p = 0; p <= highest; ++p) head[p] = -1;
  reset(n_touched);
  return static_cast<int>((out - ops) / 3);
}

int SearchSolver::run(const GridView& grid, int start, int goal, SearchAlgorithm algorithm, uint16_t* ops) {
  switch (algorithm) {
    case SearchAlgorithm::kBfs: return run_bfs(grid, start, goal, ops);
    case SearchAlgorithm::kDfs: return run_dfs(grid, start, goal, ops);
    case SearchAlgorithm::kGreedy: return run_best_first<false>(grid, start, goal, ops);
    case SearchAlgorithm::kDijkstra: return run_best_first<true>(grid, start, goal, ops);
  }
  return 0;
}

}  // namespace reasonless
