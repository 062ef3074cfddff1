#include "astar.hpp"

#include <utility>

#include "names.hpp"

namespace reasonless {

bool parse_tie_policy(std::string_view name, TiePolicy* out) { return parse_enum_name(name, kTiePolicyNames, out); }

std::string tie_policy_list() { return enum_name_list(kTiePolicyNames); }

namespace {

// The 24 orders of the four directions: the random policy draws one per expansion.
struct DirectionOrders {
  int8_t order[24][kDirs]{};
  constexpr DirectionOrders() {
    int n = 0;
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b)
        for (int c = 0; c < 4; ++c)
          for (int d = 0; d < 4; ++d)
            if (a != b && a != c && a != d && b != c && b != d && c != d) {
              order[n][0] = static_cast<int8_t>(a);
              order[n][1] = static_cast<int8_t>(b);
              order[n][2] = static_cast<int8_t>(c);
              order[n][3] = static_cast<int8_t>(d);
              ++n;
            }
  }
};
constexpr DirectionOrders kDirectionOrders;
constexpr int8_t kFixedOrder[kDirs] = {0, 1, 2, 3};

}  // namespace

// Heap key layout: f in bits 51..63 (f < 2*4096), the policy's tie-break in bits 12..50, the cell in
// bits 0..11. Keys are unique (every tie-break ends in a per-solve unique number), so the smallest
// key is the node to close, and comparing plain integers is all the heap does.
constexpr int kCellBits = 12;
constexpr uint64_t kCellMask = (uint64_t{1} << kCellBits) - 1;
constexpr int kFShift = 51;
static_assert(kMaxCells <= (1 << kCellBits), "cell index must fit the key");

AStarSolver::AStarSolver()
    : cells_(new Cell[kMaxCells]),
      heap_(new uint64_t[kMaxCells]),
      inserted_(new int16_t[kMaxCells]),
      levels_(new uint32_t[2 * kMaxCells]) {
  for (int i = 0; i < kMaxCells; ++i) cells_[i] = Cell{kUnreached, -1, -1, 0};
}

void AStarSolver::sift_up(int pos, uint64_t key) {
  while (pos > 0) {
    const int up = (pos - 1) >> 1;
    const uint64_t parent = heap_[up];
    if (parent < key) break;
    heap_[pos] = parent;
    cells_[parent & kCellMask].heap_pos = static_cast<int16_t>(pos);
    pos = up;
  }
  heap_[pos] = key;
  cells_[key & kCellMask].heap_pos = static_cast<int16_t>(pos);
}

void AStarSolver::sift_down(int pos, uint64_t key, int size) {
  for (;;) {
    int child = 2 * pos + 1;
    if (child >= size) break;
    uint64_t ck = heap_[child];
    if (child + 1 < size && heap_[child + 1] < ck) ck = heap_[++child];
    if (key < ck) break;
    heap_[pos] = ck;
    cells_[ck & kCellMask].heap_pos = static_cast<int16_t>(pos);
    pos = child;
  }
  heap_[pos] = key;
  cells_[key & kCellMask].heap_pos = static_cast<int16_t>(pos);
}

template <TiePolicy P>
AStarResult AStarSolver::run(const GridView& grid, int start, int goal, uint64_t rng_state, uint16_t* ops,
                             uint16_t* plan) {
  static_assert(P != TiePolicy::kFifo, "fifo has its own open list: run_fifo");
  const int cols = grid.cols, rows = grid.rows;
  const uint8_t* walls = grid.walls;
  const int gx = goal % cols, gy = goal / cols;
  Cell* const cells = cells_.get();
  uint64_t* const heap = heap_.get();
  int16_t* const inserted = inserted_.get();
  SplitMix64 rng{rng_state};
  uint16_t next_seq = 0;  // < kMaxCells: each cell enters the open list at most once
  uint64_t touches = 0;   // inserts + updates (< 4 * kMaxCells), for lifo

  auto make_key = [&](uint64_t f, uint64_t g, uint64_t seq, uint64_t cell) -> uint64_t {
    uint64_t tie;
    if constexpr (P == TiePolicy::kMinG) {
      tie = (g << 12) | seq;
    } else if constexpr (P == TiePolicy::kMaxG) {
      tie = ((uint64_t{kMaxCells - 1} - g) << 12) | seq;
    } else if constexpr (P == TiePolicy::kLifo) {
      tie = (uint64_t{1} << 38) - ++touches;
    } else {
      tie = ((rng.next() >> 38) << 12) | seq;  // 26 random bits, then seq keeps keys unique
    }
    return (f << kFShift) | (tie << kCellBits) | cell;
  };

  uint16_t* out = ops;

  Cell& s = cells[start];
  s.g = 0;
  s.parent = -1;
  s.seq = next_seq++;
  inserted[s.seq] = static_cast<int16_t>(start);
  heap[0] = make_key(manhattan(start % cols, start / cols, gx, gy), 0, s.seq, start);
  s.heap_pos = 0;
  int open = 1;

  bool solved = false;
  while (open > 0) {
    const int c = static_cast<int>(heap[0] & kCellMask);
    if (--open > 0) sift_down(0, heap[open], open);
    Cell& cc = cells[c];
    cc.heap_pos = -1;
    const int cx = c % cols, cy = c / cols;
    const uint16_t g = cc.g;
    out[0] = static_cast<uint16_t>(c | kCloseBit);
    out[1] = g;
    out[2] = static_cast<uint16_t>(manhattan(cx, cy, gx, gy));
    out += 3;
    if (c == goal) {
      solved = true;
      break;
    }
    // Closed cells get g = 0, which no tentative g beats: "not closed and improves g" becomes one
    // comparison. The close above already reported the real g, and parents need no g.
    cc.g = 0;
    const uint16_t ng = static_cast<uint16_t>(g + 1);

    // Which neighbours get a create, without a branch per neighbour (mazes make those unpredictable).
    // An off-grid neighbour is replaced by c itself, which is closed and free, so it never qualifies.
    const int nbs[kDirs] = {cy > 0 ? c - cols : c, cx + 1 < cols ? c + 1 : c, cy + 1 < rows ? c + cols : c,
                            cx > 0 ? c - 1 : c};
    unsigned mask = 0;
    for (int d = 0; d < kDirs; ++d)
      mask |= static_cast<unsigned>((walls[nbs[d]] == 0) & (ng < cells[nbs[d]].g)) << d;
    const int8_t* order = kFixedOrder;
    if constexpr (P == TiePolicy::kRandom) order = kDirectionOrders.order[rng.next() % 24];
    for (int k = 0; k < kDirs && mask; ++k) {
      int d;
      if constexpr (P == TiePolicy::kRandom) {
        d = order[k];
        if (!((mask >> d) & 1)) continue;
      } else {
        d = __builtin_ctz(mask);  // bit order is the fixed up, right, down, left order
      }
      mask &= ~(1u << d);
      const int nb = nbs[d];
      Cell& nc = cells[nb];
      nc.g = ng;
      nc.parent = static_cast<int16_t>(c);
      const int nh = manhattan(cx + kDx[d], cy + kDy[d], gx, gy);
      out[0] = static_cast<uint16_t>(nb);
      out[1] = ng;
      out[2] = static_cast<uint16_t>(nh);
      out += 3;
      if (nc.heap_pos < 0) {
        nc.seq = next_seq++;
        inserted[nc.seq] = static_cast<int16_t>(nb);
        sift_up(open++, make_key(ng + nh, ng, nc.seq, nb));
      } else {
        // A lower g lowers f, so the key only decreases: sifting up restores the heap.
        sift_up(nc.heap_pos, make_key(ng + nh, ng, nc.seq, nb));
      }
    }
  }
  const AStarResult result{static_cast<int>((out - ops) / 3), solved ? cells[goal].g + 1 : 0, solved};
  uint16_t* p = plan + result.n_plan;
  if (solved)
    for (int c = goal; c >= 0; c = cells[c].parent) *--p = static_cast<uint16_t>(c);
  for (int i = 0; i < next_seq; ++i) {
    Cell& t = cells[inserted[i]];
    t.g = kUnreached;
    t.heap_pos = -1;
  }
  return result;
}

// fifo needs no heap. With unit costs and the consistent Manhattan h, closed f never decreases, and a
// node created or improved from a parent of f = fmin gets f = fmin or fmin + 2 (g + 1, h ± 1: g + h
// keeps its parity). So every open node has f = fmin (level `cur`) or fmin + 2 (level `nxt`). A node in
// `cur` never improves (its f would drop below fmin); a node in `nxt` improves only to f = fmin and
// moves to `cur`. fifo closes the smallest (f, seq): a new node has the newest seq and goes to a tail;
// a moved node keeps its seq and is inserted in seq order (rare: walk back from the tail). Its old
// entry stays in `nxt` and is skipped when popped: by then its cell is closed. Entries carry x and y so
// no close divides by cols.
AStarResult AStarSolver::run_fifo(const GridView& grid, int start, int goal, uint16_t* ops, uint16_t* plan) {
  const int cols = grid.cols, rows = grid.rows;
  const uint8_t* walls = grid.walls;
  const int gx = goal % cols, gy = goal / cols;
  Cell* const cells = cells_.get();
  int16_t* const inserted = inserted_.get();
  uint32_t* cur = levels_.get();
  uint32_t* nxt = cur + kMaxCells;
  int head = 0, cur_end = 0, nxt_end = 0;
  uint16_t next_seq = 0;
  auto entry = [](int cell, int x, int y) {
    return static_cast<uint32_t>(cell) | static_cast<uint32_t>(x) << 12 | static_cast<uint32_t>(y) << 18;
  };

  Cell& s = cells[start];
  s.g = 0;
  s.parent = -1;
  s.seq = next_seq++;
  inserted[s.seq] = static_cast<int16_t>(start);
  cur[cur_end++] = entry(start, start % cols, start / cols);

  uint16_t* out = ops;
  bool solved = false;
  for (;;) {
    if (head == cur_end) {
      if (nxt_end == 0) break;
      std::swap(cur, nxt);
      cur_end = nxt_end;
      nxt_end = 0;
      head = 0;
    }
    const uint32_t e = cur[head++];
    const int c = static_cast<int>(e & kCellMask), cx = static_cast<int>((e >> 12) & 63),
              cy = static_cast<int>(e >> 18);
    Cell& cc = cells[c];
    const uint16_t g = cc.g;
    if (__builtin_expect(g == 0, 0) && c != start) continue;  // a moved node's old entry
    const int h = manhattan(cx, cy, gx, gy);
    out[0] = static_cast<uint16_t>(c | kCloseBit);
    out[1] = g;
    out[2] = static_cast<uint16_t>(h);
    out += 3;
    if (c == goal) {
      solved = true;
      break;
    }
    cc.g = 0;  // closed: no tentative g beats it (see run)
    const uint16_t ng = static_cast<uint16_t>(g + 1);

    // An off-grid neighbour is replaced by c itself, which is closed and free, so it never qualifies.
    const int nbs[kDirs] = {cy > 0 ? c - cols : c, cx + 1 < cols ? c + 1 : c, cy + 1 < rows ? c + cols : c,
                            cx > 0 ? c - 1 : c};
    unsigned mask = 0, fresh = 0;  // creates; those of never-reached cells
    for (int d = 0; d < kDirs; ++d) {
      const uint16_t og = cells[nbs[d]].g;
      mask |= static_cast<unsigned>((walls[nbs[d]] == 0) & (ng < og)) << d;
      fresh |= static_cast<unsigned>(og == kUnreached) << d;
    }
    while (mask) {
      const int d = __builtin_ctz(mask);
      mask &= mask - 1;
      const int nb = nbs[d];
      const int nx = cx + kDx[d], ny = cy + kDy[d];
      Cell& nc = cells[nb];
      nc.g = ng;
      nc.parent = static_cast<int16_t>(c);
      const int nh = manhattan(nx, ny, gx, gy);
      out[0] = static_cast<uint16_t>(nb);
      out[1] = ng;
      out[2] = static_cast<uint16_t>(nh);
      out += 3;
      const uint32_t ne = entry(nb, nx, ny);
      if (__builtin_expect((fresh >> d) & 1, 1)) {
        nc.seq = next_seq++;
        inserted[nc.seq] = static_cast<int16_t>(nb);
        if (nh > h)  // f + 2: the next level
          nxt[nxt_end++] = ne;
        else
          cur[cur_end++] = ne;
      } else {
        const uint16_t seq = nc.seq;
        int i = cur_end++;
        for (; i > head && cells[cur[i - 1] & kCellMask].seq > seq; --i) cur[i] = cur[i - 1];
        cur[i] = ne;
      }
    }
  }
  const AStarResult result{static_cast<int>((out - ops) / 3), solved ? cells[goal].g + 1 : 0, solved};
  uint16_t* p = plan + result.n_plan;
  if (solved)
    for (int c = goal; c >= 0; c = cells[c].parent) *--p = static_cast<uint16_t>(c);
  for (int i = 0; i < next_seq; ++i) cells[inserted[i]].g = kUnreached;
  return result;
}

AStarResult AStarSolver::solve(const GridView& grid, int start, int goal, TiePolicy policy, uint64_t rng_state,
                               uint16_t* ops, uint16_t* plan) {
  switch (policy) {
    case TiePolicy::kFifo: return run_fifo(grid, start, goal, ops, plan);
    case TiePolicy::kMinG: return run<TiePolicy::kMinG>(grid, start, goal, rng_state, ops, plan);
    case TiePolicy::kMaxG: return run<TiePolicy::kMaxG>(grid, start, goal, rng_state, ops, plan);
    case TiePolicy::kLifo: return run<TiePolicy::kLifo>(grid, start, goal, rng_state, ops, plan);
    case TiePolicy::kRandom: return run<TiePolicy::kRandom>(grid, start, goal, rng_state, ops, plan);
  }
  return AStarResult{0, 0, false};
}

}  // namespace reasonless
