// The verifier's state machine (rules in verify.hpp and docs/design.md §5). One pass over the tokens; every operation
// costs O(1): a cell's search state is one word in an array over the grid padded with a border of walls (no
// bounds tests for neighbours), and the lowest f of the open list comes from counts per f value with a two-level
// bitmap over them (f = g + h < 8192 because costs are cost tokens below 64·64).
//
// Speed (≥ 500,000 traces/s on two cores is the target): a fast loop settles the operations of a correct trace —
// after each close it knows the exact tokens of every create A* makes next, so a create is one 8-byte compare —
// and hands anything else to the general loop, which checks the rules one by one in the order of the codes.
#include "verify.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace reasonless::verify {
namespace {

// Token ids 0..13 (reasonless/vocab.py); coordinates start at 14.
enum : uint32_t { PAD = 0, UNK, BOS, EOS, QUERY, START, GOAL, WALL, REASONING, CREATE, CLOSE, SOLUTION, PLAN, END };
constexpr uint32_t kFirstCoord = 14;
constexpr int kMaxCells = 64 * 64;
constexpr int kMaxPadded = 66 * 66;
constexpr int kMaxF = 2 * kMaxCells;  // g, h <= 4095

constexpr const char* kNames[N_CODES] = {
    "operation_syntax_error", "plan_syntax_error", "invalid_coordinates", "create_close_wall",
    "first_create_not_last_closed", "create_non_neighbor", "create_already_closed", "close_not_in_open_list",
    "close_not_lowest_f_value", "goal_not_reached", "plan_extraction_error", "plan_length_mismatch",
    "extracted_plan_invalid", "illegal_start", "illegal_move", "plan_goal_not_reached",
    "wrong_g", "wrong_h", "unexpected_create", "missing_create", "after_goal", "plan_differs_from_trace"};

constexpr bool trace_code(int c) {
  return c != PLAN_SYNTAX_ERROR && c != ILLEGAL_START && c != ILLEGAL_MOVE && c != PLAN_GOAL_NOT_REACHED;
}

// A cell's state in one 32-bit word, laid out so that the frequent tests are one mask and one compare:
//   bits 0-12   g of its open entry, or the g it was closed with; kNoG for a cell never opened
//   bits 13-24  h of its open entry / when closed
//   bit 25      kOpenable: not closed and not a wall (never opened, or open)
//   bit 26      kOpen: in the open list
//   bits 27-28  direction of its parent (a parent is always a 4-neighbour), bit 29 kHasParent
//   bit 30      kWall
//   bit 31      kVisited, used only by the BFS at the end
// A closed cell has none of kOpenable, kOpen, kWall. "A* would create this neighbour at g" is then
// (word & (kOpenable | kG)) > (kOpenable | g): openable, and its best g so far (kNoG if none) is higher.
constexpr uint32_t kG = (1u << 13) - 1, kNoG = kG, kHShift = 13, kH = 0xFFFu << kHShift;
constexpr uint32_t kOpenable = 1u << 25, kOpen = 1u << 26, kParentShift = 27, kHasParent = 1u << 29,
                   kWall = 1u << 30, kVisited = 1u << 31;
constexpr uint32_t kFree = kOpenable | kNoG;  // a free cell never opened
inline uint32_t entry(int g, int h) { return static_cast<uint32_t>(g) | static_cast<uint32_t>(h) << kHShift; }
inline int g_of(uint32_t v) { return static_cast<int>(v & kG); }
inline int h_of(uint32_t v) { return static_cast<int>((v & kH) >> kHShift); }
inline bool is_closed(uint32_t v) { return !(v & (kOpenable | kWall)); }

// Directions up, right, down, left (docs/design.md §3) and the direction of a move (dx, dy) between neighbours, looked
// up at ((dx + 1) & 3) << 2 | ((dy + 1) & 3) (a table, not a branch: the direction is unpredictable).
constexpr int kDx[4] = {0, 1, 0, -1}, kDy[4] = {-1, 0, 1, 0};
constexpr uint8_t kDirection[16] = {0, 3, 0, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0};

// Multiset of the f values of open entries with O(1) insert, erase and minimum. No branches in add and remove:
// whether a count crosses zero is data-dependent and would often be mispredicted. clear() visits only the f
// values still present, through the bitmaps.
struct FMin {
  uint32_t count[kMaxF] = {};
  uint64_t level1[kMaxF / 64] = {};
  uint64_t level2[kMaxF / 4096] = {};

  __attribute__((always_inline)) void add(int f) {
    ++count[f];
    level1[f >> 6] |= uint64_t{1} << (f & 63);
    level2[f >> 12] |= uint64_t{1} << ((f >> 6) & 63);
  }
  __attribute__((always_inline)) void remove(int f) {
    const uint64_t gone = uint64_t{0} - (--count[f] == 0);  // all ones if f left the multiset
    const uint64_t word = level1[f >> 6] & ~((uint64_t{1} << (f & 63)) & gone);
    level1[f >> 6] = word;
    level2[f >> 12] &= ~((uint64_t{1} << ((f >> 6) & 63)) & (uint64_t{0} - (word == 0)));
  }
  // The lowest f, or -1 if empty.
  __attribute__((always_inline)) int min() const {
    for (int k = 0; k < kMaxF / 4096; ++k)
      if (level2[k]) {
        const int w = k * 64 + __builtin_ctzll(level2[k]);
        return w * 64 + __builtin_ctzll(level1[w]);
      }
    return -1;
  }
  void clear() {
    for (int k = 0; k < kMaxF / 4096; ++k) {
      for (uint64_t words = level2[k]; words; words &= words - 1) {
        const int wi = k * 64 + __builtin_ctzll(words);
        for (uint64_t bits = level1[wi]; bits; bits &= bits - 1) count[wi * 64 + __builtin_ctzll(bits)] = 0;
        level1[wi] = 0;
      }
      level2[k] = 0;
    }
  }
};

inline int iabs(int v) { return v < 0 ? -v : v; }

// Whether the four tokens at a are coordinate, coordinate, cost, cost (the arguments of create and close).
class ArgCheck {
 public:
  ArgCheck(uint32_t n_coords, uint32_t first_cost, uint32_t n_costs)
      : n_coords_(n_coords), first_cost_(first_cost), n_costs_(n_costs) {
#if defined(__SSE2__)
    const short fc = static_cast<short>(first_cost), c = static_cast<short>(n_coords - 1),
                k = static_cast<short>(n_costs - 1);
    low_ = _mm_setr_epi16(kFirstCoord, kFirstCoord, fc, fc, 0, 0, 0, 0);
    span_ = _mm_setr_epi16(c, c, k, k, 0, 0, 0, 0);
#endif
  }
  bool ok(const uint16_t* a) const {
#if defined(__SSE2__)
    // Unsigned a - low <= span lane by lane: the saturating difference is zero.
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a));
    const __m128i over = _mm_subs_epu16(_mm_sub_epi16(v, low_), span_);
    return (_mm_movemask_epi8(_mm_cmpeq_epi16(over, _mm_setzero_si128())) & 0xFF) == 0xFF;
#else
    return (a[0] - kFirstCoord < n_coords_) & (a[1] - kFirstCoord < n_coords_) & (a[2] - first_cost_ < n_costs_) &
           (a[3] - first_cost_ < n_costs_);
#endif
  }

 private:
  uint32_t n_coords_, first_cost_, n_costs_;
#if defined(__SSE2__)
  __m128i low_, span_;
#endif
};

// dst[x] = kWall if src[x] else kFree for x < n: the cell words of one row of the maze.
inline void expand_row(const uint8_t* src, uint32_t* dst, int n) {
  int x = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128(), wall = _mm_set1_epi32(static_cast<int>(kWall)),
                flip = _mm_set1_epi32(static_cast<int>(kWall ^ kFree));
  auto store4 = [&](uint32_t* out, __m128i free_mask) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_xor_si128(wall, _mm_and_si128(flip, free_mask)));
  };
  for (; x + 16 <= n; x += 16) {
    const __m128i m = _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + x)), zero);
    const __m128i lo = _mm_unpacklo_epi8(m, m), hi = _mm_unpackhi_epi8(m, m);
    store4(dst + x, _mm_unpacklo_epi16(lo, lo));
    store4(dst + x + 4, _mm_unpackhi_epi16(lo, lo));
    store4(dst + x + 8, _mm_unpacklo_epi16(hi, hi));
    store4(dst + x + 12, _mm_unpackhi_epi16(hi, hi));
  }
  auto eight = [&](int at) {
    const __m128i m = _mm_cmpeq_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + at)), zero);
    const __m128i lo = _mm_unpacklo_epi8(m, m);
    store4(dst + at, _mm_unpacklo_epi16(lo, lo));
    store4(dst + at + 4, _mm_unpackhi_epi16(lo, lo));
  };
  for (; x + 8 <= n; x += 8) eight(x);
  if (x < n && n >= 8) {  // the last eight cells again rather than a scalar tail
    eight(n - 8);
    return;
  }
#endif
  for (; x < n; ++x) dst[x] = src[x] ? kWall : kFree;
}

// The first plan error of a sequence of x | y << 6 steps (n >= 1), or -1 if it is a valid plan.
int plan_error(const Problem& p, const uint16_t* steps, size_t n) {
  const int cols = p.cols, rows = p.rows;
  const int sx = p.start % cols, sy = p.start / cols, gx = p.goal % cols, gy = p.goal / cols;
  int px = steps[0] & 63, py = steps[0] >> 6;
  if (px != sx || py != sy) return ILLEGAL_START;
  for (size_t k = 1; k < n; ++k) {
    const int x = steps[k] & 63, y = steps[k] >> 6;
    if (x >= cols || y >= rows || p.walls[y * cols + x] || iabs(x - px) + iabs(y - py) != 1) return ILLEGAL_MOVE;
    px = x;
    py = y;
  }
  if (px != gx || py != gy) return PLAN_GOAL_NOT_REACHED;
  return -1;
}

}  // namespace

const char* code_name(int code) { return code >= 0 && code < N_CODES ? kNames[code] : "unknown"; }
bool is_trace_error(int code) { return code >= 0 && code < N_CODES && trace_code(code); }

struct Verifier::State {
  std::vector<uint32_t> cells = std::vector<uint32_t>(kMaxPadded);  // padded grid: (y+1)*(cols+2) + x+1
  FMin fmin;
  // Plan steps as x | y << 6 (coordinates < 64, possibly outside the grid); grows with the longest plan seen.
  std::vector<uint16_t> plan = std::vector<uint16_t>(1024);
  std::vector<uint16_t> path = std::vector<uint16_t>(kMaxCells + 2);  // the extracted path, start first
  std::vector<uint16_t> queue = std::vector<uint16_t>(kMaxPadded + 4);  // BFS over padded cells

  // Length in cells of a shortest start→goal path, or -1 if none: a BFS over `cells` that marks the cells it
  // reaches with kVisited (so call it once per example, after the trace is checked). Branch-free inner loop
  // (whether a neighbour is free is unpredictable), one layer of equal distance at a time.
  int shortest(const Problem& p) {
    if (p.start == p.goal) return 1;
    uint32_t* const cs = cells.data();
    uint16_t* const q = queue.data();
    const int w = p.cols + 2;
    const int offs[4] = {-w, 1, w, -1};
    const int start = (p.start / p.cols + 1) * w + p.start % p.cols + 1;
    const int goal = (p.goal / p.cols + 1) * w + p.goal % p.cols + 1;
    int head = 0, tail = 0, dist = 1;
    q[tail++] = static_cast<uint16_t>(start);
    cs[start] |= kVisited;
    while (head < tail) {
      const int layer_end = tail;
      ++dist;
      bool found = false;
      for (; head < layer_end; ++head) {
        const int c = q[head];
        for (int off : offs) {
          const int nb = c + off;
          const uint32_t v = cs[nb];
          const bool fresh = !(v & (kWall | kVisited));
          cs[nb] = v | kVisited;
          q[tail] = static_cast<uint16_t>(nb);
          tail += fresh;
          found |= fresh & (nb == goal);
        }
      }
      if (found) return dist;
    }
    return -1;
  }

  template <bool kStrict>
  void run(const Problem& p, const uint16_t* tok, int64_t n, Result* out);
};

namespace {

// Per-example constants of the main loops.
struct Frame {
  uint32_t* cs;          // the padded grid of cell words
  int w;                 // its width, cols + 2
  int cols, rows;
  int goal;              // padded cell of the goal
  int offs[4];           // up, right, down, left in the padded grid
  uint32_t first_cost;   // token id of c0
  const int* hx;         // |x - gx| at hx[x + 1] for x = -1 .. 64
  const int* hy;
  ArgCheck args;
};

// The state of the search so far, shared by the fast loop and the general one.
struct Search {
  int64_t i = 0;         // next token
  int64_t ops = 0;       // well-formed operations so far
  // The last closed node; the coordinates start far away so that no cell is its neighbour before a close.
  int last = -1, last_x = -1000, last_y = -1000, last_g = 0;
  // Bit d: the neighbour of the last closed node in direction d (up, right, down, left) is one A* creates and
  // has not been created yet. Enforced in strict mode; in paper mode it only feeds `astar_like`.
  unsigned expected = 0;
  bool goal_closed = false;
  // The creates A* makes after the last close, one per direction: their four argument tokens as they lie in
  // memory. With `expected` they settle the creates of a correct trace in a few instructions.
  uint64_t sig[4] = {0, 0, 0, 0};
};

// After closing the non-goal cell c = (x, y) with g: the neighbours A* creates now (walls, the border and closed
// cells are not openable; a neighbour is created when its best g so far is higher than g + 1), and the four
// argument tokens of each one's create as they lie in memory (x, y, g + 1, h), in sig.
__attribute__((always_inline)) inline unsigned expansion(const uint32_t* __restrict cs, int w, int c, int x, int y,
                                                         int g, uint32_t first_cost, const int* __restrict hx,
                                                         const int* __restrict hy, uint64_t* __restrict sig) {
  const uint32_t better = kOpenable | static_cast<uint32_t>(g + 1);
  const unsigned expected = ((cs[c - w] & (kOpenable | kG)) > better) | ((cs[c + 1] & (kOpenable | kG)) > better) << 1 |
                            ((cs[c + w] & (kOpenable | kG)) > better) << 2 | ((cs[c - 1] & (kOpenable | kG)) > better) << 3;
  // hx[k] = |k - 1 - gx|: the h of a neighbour differs from this cell's by one.
  const int h_here = hx[x + 1] + hy[y + 1];
  const int dh[4] = {hy[y] - hy[y + 1], hx[x + 2] - hx[x + 1], hy[y + 2] - hy[y + 1], hx[x] - hx[x + 1]};
  const uint32_t g_token = first_cost + static_cast<uint32_t>(g + 1);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  // Four 16-bit lanes in one word, adjusted lane by lane (no lane under- or overflows).
  const uint64_t base = uint64_t{kFirstCoord + x} | uint64_t{kFirstCoord + y} << 16 | uint64_t{g_token} << 32 |
                        uint64_t{first_cost + h_here} << 48;
  sig[0] = base - (uint64_t{1} << 16) + (static_cast<uint64_t>(static_cast<int64_t>(dh[0])) << 48);
  sig[1] = base + 1 + (static_cast<uint64_t>(static_cast<int64_t>(dh[1])) << 48);
  sig[2] = base + (uint64_t{1} << 16) + (static_cast<uint64_t>(static_cast<int64_t>(dh[2])) << 48);
  sig[3] = base - 1 + (static_cast<uint64_t>(static_cast<int64_t>(dh[3])) << 48);
#else
  for (int k = 0; k < 4; ++k) {
    const uint16_t a[4] = {static_cast<uint16_t>(kFirstCoord + x + kDx[k]),
                           static_cast<uint16_t>(kFirstCoord + y + kDy[k]), static_cast<uint16_t>(g_token),
                           static_cast<uint16_t>(first_cost + static_cast<uint32_t>(h_here + dh[k]))};
    std::memcpy(&sig[k], a, sizeof a);
  }
#endif
  return expected;
}

// The h of the create whose tokens are sig.
inline int sig_h(uint64_t sig, uint32_t first_cost) {
  uint16_t a[4];
  std::memcpy(a, &sig, sizeof a);
  return static_cast<int>(a[3] - first_cost);
}

// Applies a create that A* makes next: the neighbour d of the last closed node, at g = last_g + 1.
__attribute__((always_inline)) inline void astar_create(uint32_t* __restrict cs, FMin& fmin, int c, int d, int g,
                                                        int h) {
  const uint32_t v = cs[c];
  if (v & kOpen) fmin.remove(g_of(v) + h_of(v));
  cs[c] = kOpenable | kOpen | entry(g, h) | static_cast<uint32_t>(d ^ 2) << kParentShift | kHasParent;
  fmin.add(g + h);
}

// The fast loop: runs while the response is exactly what A* does, one operation after the other, and stops at
// the first token it does not settle (an error, a plan step, the end, the goal closed...), leaving the rest to
// the general loop. What it accepts is valid in both modes and obeys every strict rule. Its own function with
// as little state as possible, so that the compiler keeps it in registers: every settled operation is five
// tokens, a create's cell and g are read off its matching sig, and the last closed node's coordinates and g
// are recovered from its cell when the loop ends. Returns the number of operations it settled.
__attribute__((noinline)) int64_t fast_ops(Search& s, FMin& fmin, const Frame& f, const uint16_t* __restrict tok,
                                           int64_t n) {
  if (s.goal_closed) return 0;
  const int64_t i_before = s.i;
  int64_t i = i_before;
  int last = s.last;
  unsigned expected = s.expected;
  uint64_t sig[4] = {s.sig[0], s.sig[1], s.sig[2], s.sig[3]};
  uint32_t* __restrict const cs = f.cs;
  const int w = f.w, goal = f.goal;
  const uint32_t cols = static_cast<uint32_t>(f.cols), rows = static_cast<uint32_t>(f.rows);
  const uint32_t first_cost = f.first_cost;
  const ArgCheck args = f.args;
  while (i + 4 < n) {
    const uint32_t t = tok[i];
    uint64_t u;
    std::memcpy(&u, tok + i + 1, sizeof u);
    if (t == CREATE) {
      const unsigned match = ((u == sig[0]) | (u == sig[1]) << 1 | (u == sig[2]) << 2 | (u == sig[3]) << 3) & expected;
      if (!match) break;
      const int d = __builtin_ctz(match);
      uint16_t a[4];
      std::memcpy(a, &u, sizeof a);
      astar_create(cs, fmin, last + f.offs[d], d, static_cast<int>(a[2] - first_cost),
                   static_cast<int>(a[3] - first_cost));
      expected &= ~(1u << d);
      i += 5;
      continue;
    }
    if (t != CLOSE || expected || !args.ok(tok + i + 1)) break;
    const uint32_t x = tok[i + 1] - kFirstCoord, y = tok[i + 2] - kFirstCoord;
    const int g = static_cast<int>(tok[i + 3] - first_cost), h = static_cast<int>(tok[i + 4] - first_cost);
    const int c = (x < cols) & (y < rows) ? (static_cast<int>(y) + 1) * w + static_cast<int>(x) + 1 : 0;  // 0: wall
    const uint32_t v = cs[c];
    if (((v & (kOpen | kG | kH)) != (kOpen | entry(g, h))) || g + h != fmin.min()) break;
    fmin.remove(g + h);
    cs[c] = v & ~(kOpenable | kOpen);
    last = c;
    i += 5;
    if (c == goal) {
      s.goal_closed = true;
      expected = 0;
      break;
    }
    expected = expansion(cs, w, c, static_cast<int>(x), static_cast<int>(y), g, first_cost, f.hx, f.hy, sig);
  }
  const int64_t settled = (i - i_before) / 5;
  s.i = i;
  s.ops += settled;
  if (settled) {
    s.last = last;
    s.last_x = last % w - 1;
    s.last_y = last / w - 1;
    s.last_g = g_of(cs[last]);
  }
  s.expected = expected;
  for (int k = 0; k < 4; ++k) s.sig[k] = sig[k];
  return settled;
}

}  // namespace

template <bool kStrict>
void Verifier::State::run(const Problem& p, const uint16_t* tok, int64_t n, Result* out) {
  Result& r = *out;
  r = Result{};
  const int rows = p.rows, cols = p.cols, w = cols + 2;
  const uint32_t n_coords = static_cast<uint32_t>(std::max(rows, cols));
  const uint32_t n_costs = static_cast<uint32_t>(rows * cols);
  const uint32_t first_cost = kFirstCoord + n_coords;
  const int sx = p.start % cols, sy = p.start / cols, gx = p.goal % cols, gy = p.goal / cols;
  const int start = (sy + 1) * w + sx + 1, goal = (gy + 1) * w + gx + 1;

  // The padded grid: a border of walls, the maze's walls, every free cell never opened.
  uint32_t* const cs = cells.data();
  std::fill(cs, cs + w, kWall);
  for (int y = 0; y < rows; ++y) {
    uint32_t* __restrict row = cs + (y + 1) * w;
    const uint8_t* __restrict src = p.walls + y * cols;
    row[0] = kWall;
    expand_row(src, row + 1, cols);
    row[cols + 1] = kWall;
  }
  std::fill(cs + (rows + 1) * w, cs + (rows + 2) * w, kWall);
  int hx[66], hy[66];
  for (int k = 0; k < 66; ++k) {
    hx[k] = iabs(k - 1 - gx);
    hy[k] = iabs(k - 1 - gy);
  }
  const Frame f{cs, w, cols, rows, goal, {-w, 1, w, -1}, first_cost, hx, hy,
                ArgCheck(n_coords, first_cost, n_costs)};

  bool trace_error = false;  // a trace error was recorded
  auto record = [&](int code, int64_t pos) {
    if (r.counts[code] != UINT32_MAX) ++r.counts[code];
    if (r.first_error < 0) {
      r.first_error = static_cast<int16_t>(code);
      r.first_error_at = pos;
    }
    trace_error |= trace_code(code);
  };
  auto skip_args = [&](int64_t i) {
    while (i < n && tok[i] - kFirstCoord < n_coords + n_costs) ++i;
    return i;
  };

  // Open list = {start with g 0}; no node closed yet.
  const int h_start = iabs(sx - gx) + iabs(sy - gy);
  cs[start] = kOpenable | kOpen | entry(0, h_start);
  fmin.add(h_start);
  Search s;
  // Every operation so far obeyed the strict rules too (tracked in paper mode; implied in strict mode when no
  // trace error was recorded). With the goal closed this makes g(goal) the shortest distance: no BFS needed.
  bool astar_like = true;
  bool plan_syntax = false;
  size_t n_plan = 0;
  uint16_t* plan_steps = plan.data();

  if (n > 0 && tok[0] == REASONING) s.i = 1;
  while (s.i < n) {
    const uint32_t t = tok[s.i];
    if (t == CREATE || t == CLOSE) {
      if (n_plan == 0 && fast_ops(s, fmin, f, tok, n) > 0) continue;
      const int64_t i = s.i;
      if (i + 4 >= n || !f.args.ok(tok + i + 1)) {
        record(OPERATION_SYNTAX_ERROR, s.ops);
        s.i = skip_args(i + 1);
        continue;
      }
      const int x = static_cast<int>(tok[i + 1] - kFirstCoord), y = static_cast<int>(tok[i + 2] - kFirstCoord);
      const int g = static_cast<int>(tok[i + 3] - first_cost), h = static_cast<int>(tok[i + 4] - first_cost);
      const int64_t pos = s.ops++;
      s.i += 5;
      if (n_plan) {
        if (kStrict) record(OPERATION_SYNTAX_ERROR, pos);
        n_plan = 0;
      }
      const bool in_grid = (x < cols) & (y < rows);
      const int c = in_grid ? (y + 1) * w + x + 1 : 0;  // cell 0 (a border wall) stands in for outside the grid
      const uint32_t v = cs[c];

      // One test that no rule is broken; an operation that breaks one goes through the checks in order, to
      // record the first rule it breaks, and is skipped. In strict mode the expected-create mask and the open
      // list imply most rules: a cell in the mask is in the grid, free, not closed and the goal is not closed
      // yet; every open entry is a free cell with the right h.
      if (t == CREATE) {
        const int dx = x - s.last_x, dy = y - s.last_y;
        const bool adjacent = iabs(dx) + iabs(dy) == 1;
        const int d = kDirection[((dx + 1) & 3) << 2 | ((dy + 1) & 3)];  // from the last closed node, if adjacent
        const bool right_h = h == hx[x + 1] + hy[y + 1];
        const bool a_star = adjacent & (g == s.last_g + 1) & right_h & ((s.expected >> d) & 1);
        // kOpenable: in the grid (cell 0 is a wall), free and not closed.
        const bool ok = kStrict ? a_star : adjacent & ((v & kOpenable) != 0);
        if (ok) {
          if (!kStrict) astar_like &= a_star & !s.goal_closed;
          s.expected &= ~(1u << d);
          // The entry takes the new values only when g is lower (an equal g keeps the old h and parent); a cell
          // never opened has g kNoG.
          if (g < g_of(v)) astar_create(cs, fmin, c, d, g, h);
          continue;
        }
        // Every broken rule blocks a create; in paper mode only the first five can be broken here.
        if (kStrict && s.goal_closed)
          record(AFTER_GOAL, pos);
        else if (!in_grid)
          record(INVALID_COORDINATES, pos);
        else if (v & kWall)
          record(CREATE_CLOSE_WALL, pos);
        else if (s.last < 0)
          record(FIRST_CREATE_NOT_LAST_CLOSED, pos);
        else if (!adjacent)
          record(CREATE_NON_NEIGHBOR, pos);
        else if (is_closed(v))
          record(CREATE_ALREADY_CLOSED, pos);
        else if (g != s.last_g + 1)
          record(WRONG_G, pos);
        else if (!right_h)
          record(WRONG_H, pos);
        else
          record(UNEXPECTED_CREATE, pos);
        continue;
      }

      const bool in_open = (v & (kOpen | kG | kH)) == (kOpen | entry(g, h));  // implies a free cell in the grid
      bool ok = kStrict ? in_open & !s.goal_closed : in_open;
      ok = ok && g + h == fmin.min();
      if (!ok) {
        if (kStrict && s.goal_closed)
          record(AFTER_GOAL, pos);
        else if (!in_grid)
          record(INVALID_COORDINATES, pos);
        else if (v & kWall)
          record(CREATE_CLOSE_WALL, pos);
        else if (kStrict && h != hx[x + 1] + hy[y + 1])
          record(WRONG_H, pos);
        else if (!in_open)
          record(CLOSE_NOT_IN_OPEN_LIST, pos);
        else
          record(CLOSE_NOT_LOWEST_F_VALUE, pos);
        continue;
      }
      // Creates missing from the previous expansion do not block the close.
      if (s.expected) {
        if (kStrict) {
          for (unsigned m = s.expected; m; m &= m - 1) record(MISSING_CREATE, pos);
        } else {
          astar_like = false;
        }
      }
      fmin.remove(g + h);
      cs[c] = v & ~(kOpenable | kOpen);
      s.last = c;
      s.last_x = x;
      s.last_y = y;
      s.last_g = g;
      if (c == goal) {
        s.goal_closed = true;
        s.expected = 0;
      } else {
        s.expected = expansion(cs, w, c, x, y, g, first_cost, hx, hy, s.sig);
      }
      continue;
    }
    if (t == PLAN) {
      const int64_t i = s.i;
      if (i + 2 >= n || tok[i + 1] - kFirstCoord >= n_coords || tok[i + 2] - kFirstCoord >= n_coords) {
        record(PLAN_SYNTAX_ERROR, s.ops);
        plan_syntax = true;
        s.i = skip_args(i + 1);
        continue;
      }
      if (n_plan == plan.size()) {
        plan.resize(2 * n_plan);
        plan_steps = plan.data();
      }
      plan_steps[n_plan++] = static_cast<uint16_t>((tok[i + 1] - kFirstCoord) | ((tok[i + 2] - kFirstCoord) << 6));
      s.i += 3;
      continue;
    }
    if (t == SOLUTION) {
      ++s.i;
      continue;
    }
    if (t == END || t == EOS || t == PAD) break;
    record(OPERATION_SYNTAX_ERROR, s.ops);
    s.i = skip_args(s.i + 1);
  }
  const int64_t ops = s.ops;
  const bool goal_closed = s.goal_closed;
  const unsigned expected = s.expected;
  const bool open_empty = fmin.min() < 0;

  // ---- End of the response ----
  const bool ops_clean = !trace_error && (kStrict || astar_like);
  if (kStrict && !goal_closed) {
    for (unsigned m = expected; m; m &= m - 1) record(MISSING_CREATE, ops);
  }
  int shortest_len = -2;  // unknown
  if (goal_closed && ops_clean) shortest_len = g_of(cs[goal]) + 1;
  if (!goal_closed) {
    bool missed = true;
    // A strict trace of a maze without a path ends with an empty open list. Without any error the search was
    // complete, which proves there is no path; otherwise ask a BFS.
    if (kStrict && open_empty) {
      if (trace_error) {
        shortest_len = shortest(p);
        missed = shortest_len > 0;
      } else {
        missed = false;
      }
    }
    if (missed) record(GOAL_NOT_REACHED, ops);
  }

  uint16_t* const path_steps = path.data();
  size_t n_path = 0;
  if (goal_closed) {
    // Parent links point to nodes closed earlier, so the walk ends at the start; the bound (a path visits each
    // cell at most once) only guards that.
    int cur = goal, x = gx, y = gy;
    bool broken = false;
    while (cur != start) {
      const uint32_t v = cs[cur];
      path_steps[n_path++] = static_cast<uint16_t>(x | y << 6);
      if (n_path >= static_cast<size_t>(rows * cols) || !is_closed(v) || !(v & kHasParent)) {
        broken = true;
        break;
      }
      const int d = static_cast<int>(v >> kParentShift) & 3;
      cur += f.offs[d];
      x += kDx[d];
      y += kDy[d];
    }
    if (broken) record(PLAN_EXTRACTION_ERROR, ops);
    path_steps[n_path++] = static_cast<uint16_t>(sx | sy << 6);
    std::reverse(path_steps, path_steps + n_path);
  }

  if (!plan_syntax && n_plan == 0) {
    record(PLAN_SYNTAX_ERROR, ops);
    plan_syntax = true;
  }
  bool plan_ok = false;
  if (!plan_syntax) {
    const bool same = n_path == n_plan && std::equal(path_steps, path_steps + n_path, plan_steps);
    const int path_error = n_path == n_plan ? plan_error(p, path_steps, n_path) : -1;
    if (n_path != n_plan) {
      record(PLAN_LENGTH_MISMATCH, ops);
    } else if (path_error >= 0) {
      record(EXTRACTED_PLAN_INVALID, ops);
    } else if (kStrict && !same) {
      record(PLAN_DIFFERS_FROM_TRACE, ops);
    }
    const int e = same ? path_error : plan_error(p, plan_steps, n_plan);
    if (e >= 0) record(e, ops);
    plan_ok = e < 0;
  }

  r.plan_valid = plan_ok;
  if (plan_ok) {
    if (shortest_len == -2) shortest_len = shortest(p);
    r.plan_optimal = static_cast<int64_t>(n_plan) == shortest_len;
  }
  r.trace_valid = !trace_error;
  r.n_ops = ops;
  r.plan_len = static_cast<int64_t>(n_plan);
  fmin.clear();
}

Verifier::Verifier() : s_(std::make_unique<State>()) {}
Verifier::~Verifier() = default;

void Verifier::run(const Problem& problem, const uint16_t* tokens, int64_t n_tokens, Mode mode, Result* out) {
  if (mode == Mode::strict)
    s_->run<true>(problem, tokens, n_tokens, out);
  else
    s_->run<false>(problem, tokens, n_tokens, out);
}

// ---- Text ----
namespace {

constexpr const char* kWords[kFirstCoord] = {"<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>", "query",
                                             "start",   "goal",    "wall",    "reasoning", "create",
                                             "close",   "solution", "plan",   "end"};

inline bool is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31); }

// Splits s[0, n) into words one at a time.
struct Words {
  const char* s;
  size_t n, pos = 0;
  size_t begin = 0, len = 0;  // the current word
  bool next() {
    while (pos < n && is_space(static_cast<unsigned char>(s[pos]))) ++pos;
    if (pos == n) return false;
    begin = pos;
    while (pos < n && !is_space(static_cast<unsigned char>(s[pos]))) ++pos;
    len = pos - begin;
    return true;
  }
  bool is(const char* w) const { return std::strlen(w) == len && std::memcmp(s + begin, w, len) == 0; }
  // The word for an error message: at most 24 bytes, other bytes than printable ASCII as \xNN.
  std::string quoted() const {
    std::string q = "'";
    for (size_t k = 0; k < std::min<size_t>(len, 24); ++k) {
      const unsigned char c = static_cast<unsigned char>(s[begin + k]);
      if (c >= 32 && c < 127) {
        q += static_cast<char>(c);
      } else {
        static const char hex[] = "0123456789abcdef";
        q += "\\x";
        q += hex[c >> 4];
        q += hex[c & 15];
      }
    }
    return q + (len > 24 ? "...'" : "'");
  }
};

// A canonical decimal (no sign, no leading zero) below `limit`, or -1.
int decimal(const char* w, size_t len, int limit) {
  if (len == 0 || len > 5 || (len > 1 && w[0] == '0')) return -1;
  int v = 0;
  for (size_t k = 0; k < len; ++k) {
    if (w[k] < '0' || w[k] > '9') return -1;
    v = v * 10 + (w[k] - '0');
  }
  return v < limit ? v : -1;
}

uint16_t word_id(const char* w, size_t len, int n_coords, int n_costs) {
  if (len == 0) return UNK;
  if (w[0] >= '0' && w[0] <= '9') {
    const int v = decimal(w, len, n_coords);
    return v < 0 ? uint16_t{UNK} : static_cast<uint16_t>(kFirstCoord + v);
  }
  if (w[0] == 'c' && len > 1 && w[1] >= '0' && w[1] <= '9') {
    const int v = decimal(w + 1, len - 1, n_costs);
    return v < 0 ? uint16_t{UNK} : static_cast<uint16_t>(kFirstCoord + n_coords + v);
  }
  for (uint32_t id = 0; id < kFirstCoord; ++id)
    if (std::strlen(kWords[id]) == len && std::memcmp(kWords[id], w, len) == 0) return static_cast<uint16_t>(id);
  return UNK;
}

}  // namespace

void encode_words(const char* s, size_t n, int rows, int cols, std::vector<uint16_t>* out) {
  const int n_coords = std::max(rows, cols), n_costs = rows * cols;
  Words words{s, n};
  while (words.next()) out->push_back(word_id(s + words.begin, words.len, n_coords, n_costs));
}

bool parse_prompt(const char* s, size_t n, int rows, int cols, ParsedPrompt* out) {
  out->walls.assign(static_cast<size_t>(rows) * cols, 0);
  out->response_begin = -1;
  out->error.clear();
  Words w{s, n};
  int64_t index = -1;  // of the current word
  auto fail = [&](const std::string& why) {
    out->error = why;
    return false;
  };
  auto advance = [&]() {
    ++index;
    return w.next();
  };
  auto expect = [&](const char* keyword) {
    if (!advance()) return fail("the prompt ends where '" + std::string(keyword) + "' was expected");
    if (!w.is(keyword))
      return fail("word " + std::to_string(index) + ": expected '" + keyword + "', found " + w.quoted());
    return true;
  };
  auto cell = [&](const char* what, int* x, int* y) {
    for (int k = 0; k < 2; ++k) {
      if (!advance()) return fail(std::string("the prompt ends inside '") + what + " X Y'");
      const int v = decimal(s + w.begin, w.len, 1 << 16);
      if (v < 0)
        return fail("word " + std::to_string(index) + ": expected the " + (k ? "y" : "x") + " coordinate of " +
                    what + ", found " + w.quoted());
      (k ? *y : *x) = v;
    }
    if (*x >= cols || *y >= rows)
      return fail(std::string(what) + " (" + std::to_string(*x) + ", " + std::to_string(*y) + ") is outside the grid of " +
                  std::to_string(rows) + " rows and " + std::to_string(cols) + " columns");
    return true;
  };
  if (!advance()) return fail("the prompt is empty");
  if (w.is("<|bos|>") && !advance()) return fail("the prompt ends after <|bos|>");
  if (!w.is("query")) return fail("word " + std::to_string(index) + ": expected 'query', found " + w.quoted());
  if (!expect("start") || !cell("start", &out->start_x, &out->start_y)) return false;
  if (!expect("goal") || !cell("goal", &out->goal_x, &out->goal_y)) return false;
  while (advance()) {
    if (w.is("reasoning")) {
      out->response_begin = static_cast<int64_t>(w.begin);
      break;
    }
    if (!w.is("wall"))
      return fail("word " + std::to_string(index) + ": expected 'wall' or 'reasoning', found " + w.quoted());
    int x, y;
    if (!cell("wall", &x, &y)) return false;
    out->walls[static_cast<size_t>(y) * cols + x] = 1;
  }
  if (out->walls[static_cast<size_t>(out->start_y) * cols + out->start_x])
    return fail("start (" + std::to_string(out->start_x) + ", " + std::to_string(out->start_y) + ") is a wall");
  if (out->walls[static_cast<size_t>(out->goal_y) * cols + out->goal_x])
    return fail("goal (" + std::to_string(out->goal_x) + ", " + std::to_string(out->goal_y) + ") is a wall");
  return true;
}

}  // namespace reasonless::verify
