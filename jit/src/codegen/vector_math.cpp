#include "vector_math.hpp"

#include <edifice/core/error.hpp>

#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/Module.h>

#include <functional>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <utility>

namespace edifice::jit::codegen::vector_math {
namespace {

using V = llvm::Value*;

// Polynomial coefficients, lowest degree first: Chebyshev fits (near-minimax) computed with
// mpmath by scripts/fit_vector_math.py, which prints these arrays and each fit's error. The f64
// fits err below 2^-56 of the result; the f32 ones evaluated in f64 near 1e-10.

// (e^r - 1 - r) / r^2 on |r| <= ln2 / 2.
constexpr double kExpF64[] = {0.5,
                              0.1666666666666667,
                              0.04166666666666667,
                              0.008333333333326112,
                              0.001388888888888373,
                              0.0001984126987490126,
                              2.4801587325605324e-05,
                              2.7557255297969643e-06,
                              2.755727357010214e-07,
                              2.5105259538448494e-08,
                              2.0914717341716378e-09};
constexpr double kExpF32[] = {0.5,
                              0.166666667191548,
                              0.04166666671913807,
                              0.008333298413941455,
                              0.0013888853979832356,
                              0.00019899332056564083,
                              2.485963629410833e-05};
// (2 atanh(s) - 2s) / s^3 as a polynomial in w = s^2, s = f / (2 + f), 1 + f in [sqrt2/2, sqrt2).
constexpr double kLogF64[] = {0.666666666666667,   0.399999999998992,  0.2857142862611452,
                              0.22222211112104948, 0.1818289077802613, 0.15331666676597175,
                              0.146171283998073};
constexpr double kLogF32[] = {0.6666666655426973, 0.40000122025712326, 0.2855079973020907,
                              0.23331040834029354};
// (tanh(x) - x) / x^3 as a polynomial in x^2 on |x| <= 0.36.
constexpr double kTanhSmallF64[] = {
    -0.3333333333333333,    0.13333333333332578,   -0.05396825396669524,
    0.02186948841228676,    -0.008863230589354409, 0.0035920170244781394,
    -0.0014543620323563238, 0.0005785381418443278, -0.00018964726016580815};
// erf(x) / x as a polynomial in x^2 on [0, 1].
constexpr double kErfSmallF64[] = {
    1.1283791670955126,      -0.37612638903183543,   0.11283791670945006,
    -0.02686617064323777,    0.0052239776071164225,  -0.0008548325975389692,
    0.00012055294904839707,  -1.492473690741966e-05, 1.6447424703317362e-06,
    -1.6208483801871705e-07, 1.3720064546777686e-08, -7.795898827002142e-10};
constexpr double kErfSmallF32[] = {
    1.1283791658483509,   -0.37612626666720334,  0.11283594715160218,  -0.026854212010626412,
    0.005189087423433974, -0.000801686428716587, 7.875875062685488e-05};
// erfc(x) e^(x^2) on [1, 2], [2, 3.5] and [3.5, 6] as polynomials in x minus the midpoint.
constexpr double kErfcF64[3][16] = {
    {0.3215854164543175, -0.16362291773256007, 0.07615103985548055, -0.03293090529956347,
     0.013377340952802835, -0.005145957547915988, 0.0018861348854630824, -0.0006619300686179933,
     0.00022330981211640024, -7.265888759557882e-05, 2.286543658874603e-05, -6.975285854904505e-06,
     2.061689065129881e-06, -5.946998373950516e-07, 1.8038197652346406e-07, -4.932844202000261e-08},
    {0.19366209627906866, -0.06323763756063483, 0.01975859298732897, -0.005934337896999284,
     0.001719581885061462, -0.0004821950849322654, 0.0001311818037632169, -3.4698610270387155e-05,
     8.940133543917338e-06, -2.247368610883161e-06, 5.520607070345556e-07, -1.3264363071840677e-07,
     3.103266553704028e-08, -7.162110554563578e-09, 1.819371994210045e-09, -4.029989243785423e-10},
    {0.11630270721024713, -0.023503448598163123, 0.0046613263689870375, -0.0009080988970320573,
     0.00017392830384343463, -3.277578110287109e-05, 6.081115557021995e-06, -1.1115678822071087e-06,
     2.002894521341176e-07, -3.559534170211966e-08, 6.24584245950732e-09, -1.0813100185433638e-09,
     1.8226396585714537e-10, -3.081317881965821e-11, 6.183166565869695e-12,
     -1.0171709689071707e-12}};
constexpr double kErfcF64Mid[3] = {1.5, 2.75, 4.75};
// erfc(x) e^(x^2) on [1, 4] in x - 2.5.
constexpr double kErfcF32[] = {
    0.21080635774313639,    -0.07434734529148741,   0.024938198914209786,   -0.008001617248247285,
    0.0024659996342782436,  -0.0007333448751368135, 0.00021295046917599458, -5.932730341120816e-05,
    1.4364682373340648e-05, -3.834632179188718e-06, 1.6698367593278667e-06, -4.123142820307557e-07};
// For erf_f32, fitted with every coefficient an f32 (each rounded in turn and the higher ones
// refitted by least squares on Chebyshev nodes; scripts/fit_vector_math.py): erf(x)/x - 1 in
// x^2 - 0.5 for x^2 in [0, 1] (x (1 + R) within 2.1e-9 of erf(x), relative), and erfc(x) e^(x^2)
// on [1, 4] in x - 2.5 (within 4.5e-8, relative).
constexpr float kErfSmallF32Arith[] = {-0.0345312618f, -0.281072199f,  0.0794100016f,
                                       -0.0182832945f, 0.00348011917f, -0.000565587718f,
                                       7.89695841e-05f};
constexpr float kErfcF32Arith[] = {0.210806355f,     -0.0743473545f,   0.0249382108f,
                                   -0.00800151937f,  0.00246599596f,   -0.000733610941f,
                                   0.000212933373f,  -5.90416639e-05f, 1.43797315e-05f,
                                   -3.96660198e-06f, 1.66641655e-06f,  -3.90357513e-07f};

// ln2 in two parts (Cody-Waite): kLn2Hi has 33 significant bits, so k * kLn2Hi is exact for
// every exponent k of a double, and x - k * kLn2Hi is exact near a multiple of ln2.
constexpr double kLn2Hi = 0x1.62e42fee00000p-1;
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
constexpr double kLog2E = 0x1.71547652b82fep+0;
constexpr double kShifter = 0x1.8p52;  // see exp_parts

// How results are computed: in f64 arithmetic for f64 results (polynomials below 2^-53) or
// for f32 results (shorter polynomials, about 1e-10, rounded once at the end); or, for the f32
// exceptions at the end of this file (exp_f32_bounded, erf_f32), in f32 arithmetic.
enum class Grade { f32_in_f64, f64, f32 };

// Arithmetic on scalars or vectors of one float type (f64 but for Grade::f32),
// every operation rounded as written (no fast-math flags; multiply-adds may fuse, which every
// formula here tolerates, unless multiply_add asks for fusion).
class Code {
 public:
  Code(llvm::IRBuilder<>& builder, llvm::Type* float_type, Grade how)
      : b(builder),
        type(float_type),
        i64(llvm::Type::getIntNTy(builder.getContext(),
                                  float_type->getScalarType()->getPrimitiveSizeInBits())),
        grade(how) {
    if (auto* vt = llvm::dyn_cast<llvm::VectorType>(type)) i64 = llvm::VectorType::get(i64, vt);
  }

  V c(double v) { return llvm::ConstantFP::get(type, v); }
  V ci(std::int64_t v) { return llvm::ConstantInt::get(i64, static_cast<std::uint64_t>(v), true); }
  V add(V a, V x) { return b.CreateFAdd(a, x); }
  V sub(V a, V x) { return b.CreateFSub(a, x); }
  V mul(V a, V x) { return b.CreateFMul(a, x); }
  V div(V a, V x) { return b.CreateFDiv(a, x); }
  V fma(V a, V x, V y) { return b.CreateIntrinsic(multiply_add, {type}, {a, x, y}); }
  V lt(V a, V x) { return b.CreateFCmpOLT(a, x); }
  V sel(V cond, V a, V x) { return b.CreateSelect(cond, a, x); }
  V bits(V a) { return b.CreateBitCast(a, i64); }
  V from_bits(V a) { return b.CreateBitCast(a, type); }
  V fabs(V a) { return b.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, a); }
  V copysign(V mag, V sign) {
    return b.CreateBinaryIntrinsic(llvm::Intrinsic::copysign, mag, sign);
  }
  /// Keeps `x` within [lo, hi]; NaN stays NaN (ordered comparisons are false for it).
  V clamp(V x, double lo, double hi) {
    x = sel(lt(x, c(lo)), c(lo), x);
    return sel(lt(c(hi), x), c(hi), x);
  }
  /// Horner's scheme, coefficients lowest degree first (an array or span of float or double).
  template <typename Coefficients>
  V poly(V x, const Coefficients& coefficients) {
    const std::span coef(coefficients);
    V acc = c(coef.back());
    for (std::size_t i = coef.size() - 1; i-- > 0;) acc = fma(acc, x, c(coef[i]));
    return acc;
  }
  /// 2^k for an integer k in the normal exponent range, built in the exponent field.
  V pow2(V k) { return from_bits(b.CreateShl(b.CreateAdd(k, ci(1023)), 52)); }
  /// y * 2^k for k within twice the normal exponent range: two exact power-of-two factors, so
  /// a subnormal result is rounded once, and an overflow gives inf.
  V scale(V y, V k) {
    if (grade == Grade::f32_in_f64) return mul(y, pow2(k));  // |k| < 300, see exp_range
    V k1 = b.CreateAShr(k, 1);
    return mul(mul(y, pow2(k1)), pow2(b.CreateSub(k, k1)));
  }

  /// e^x = 2^k (1 + q) in f64 for x in [-746, 710]: k = round(x / ln2), q = e^r - 1 with
  /// r = x - k ln2 in [-ln2/2, ln2/2].
  struct ExpParts {
    V k;  // an integer of the float's width
    V q;
  };
  ExpParts exp_parts(V x) {
    // Adding 1.5 * 2^52 rounds to an integer, which then sits in the low bits of the sum's
    // representation: k without fptosi (poison on NaN).
    V t = fma(x, c(kLog2E), c(kShifter));
    V kd = sub(t, c(kShifter));
    V k = b.CreateSub(bits(t), bits(c(kShifter)));
    V r;
    if (grade == Grade::f32_in_f64) {
      r = fma(kd, c(-std::numbers::ln2), x);  // |k| < 300: r errs by 1e-14 at most
    } else {
      r = fma(kd, c(-kLn2Hi), x);
      r = fma(kd, c(-kLn2Lo), r);
    }
    V p = poly(r, grade == Grade::f64 ? std::span<const double>(kExpF64) : kExpF32);
    return {k, fma(mul(r, r), p, r)};
  }

  V exp(V x) {
    // Beyond the clamp the result is 0 or inf anyway; the clamp keeps k in scale's range.
    x = clamp(x, exp_range().first, exp_range().second);
    ExpParts e = exp_parts(x);
    return scale(add(c(1), e.q), e.k);
  }

  /// Where e^x is neither 0 nor inf once rounded to the result type (widened a little).
  std::pair<double, double> exp_range() const {
    if (grade == Grade::f64) return {-746, 710};
    return {-200, 200};
  }

  V log(V x) {
    // x = 2^k m with m in [sqrt2/2, sqrt2); subnormals are scaled into the normal range first.
    V subnormal = lt(x, c(0x1p-1022));
    V xs = sel(subnormal, mul(x, c(0x1p54)), x);
    V ix = bits(xs);
    V e = b.CreateAShr(b.CreateSub(ix, ci(0x3fe6a09e667f3bcd)), 52);
    V f = sub(from_bits(b.CreateSub(ix, b.CreateShl(e, 52))), c(1));
    V k = b.CreateSIToFP(b.CreateAdd(e, sel(subnormal, ci(-54), ci(0))), type);
    // log(1 + f) = 2 atanh(s) = f - (f^2/2 - s (f^2/2 + T)): f exact, the rest small.
    V s = div(f, add(c(2), f));
    V w = mul(s, s);
    V t = mul(w, poly(w, grade == Grade::f64 ? std::span<const double>(kLogF64) : kLogF32));
    V hfsq = mul(c(0.5), mul(f, f));
    V inner = fma(k, c(kLn2Lo), mul(s, add(hfsq, t)));
    V r = fma(k, c(kLn2Hi), b.CreateFNeg(sub(sub(hfsq, inner), f)));
    const double inf = std::numeric_limits<double>::infinity();
    r = sel(b.CreateFCmpOEQ(x, c(inf)), c(inf), r);
    r = sel(b.CreateFCmpOEQ(x, c(0)), c(-inf), r);
    r = sel(lt(x, c(0)), c(std::numeric_limits<double>::quiet_NaN()), r);
    return sel(b.CreateFCmpUNO(x, x), x, r);
  }

  V tanh(V x) {
    // With e = e^(-2|x|) = 2^k (1 + q): tanh |x| = -m / (2 + m) with m = e - 1 = (2^k - 1) +
    // 2^k q (2^k - 1 exact, no cancellation near 0), which is all f32 results need.
    V y = mul(c(-2), fabs(x));
    ExpParts e = exp_parts(sel(lt(y, c(exp_range().first)), c(exp_range().first), y));
    V two_k = scale(c(1), e.k);
    V m = fma(two_k, e.q, sub(two_k, c(1)));
    V d = add(c(2), m);
    V quotient = div(b.CreateFNeg(m), d);
    if (grade != Grade::f64) return copysign(quotient, x);
    // f64: 2 + m is rounded; its error (2 - d) + m is exact (Fast2Sum) and corrects the
    // quotient. From |x| = 1 on, 1 - 2e / (1 + e), whose second term is small (2 + m would cost
    // an ULP near 1). Below |x| = 0.36 m's rounding costs up to 2 ULP (2^k - 1 + 2^k q cancels
    // for k = -1): an odd polynomial there.
    V near_zero = fma(b.CreateFNeg(quotient), div(add(sub(c(2), d), m), d), quotient);
    V ex = scale(add(c(1), e.q), e.k);
    V far = sub(c(1), div(add(ex, ex), add(c(1), ex)));
    V r = copysign(sel(lt(y, c(-2)), far, near_zero), x);
    V w = mul(x, x);
    V small = fma(x, mul(w, poly(w, kTanhSmallF64)), x);
    return sel(lt(fabs(x), c(0.36)), small, r);
  }

  V erf(V x) {
    // |x| < 1: x P(x^2). Above: 1 - e^(-x^2) G(x) with G = erfc(x) e^(x^2), smooth and fitted
    // per interval. erf rounds to 1 from 6 (f64) or 4 (f32) on.
    const bool f64_grade = grade == Grade::f64;
    const double top = f64_grade ? 6 : 4;
    V a = fabs(x);
    V small =
        mul(a, poly(mul(a, a), f64_grade ? std::span<const double>(kErfSmallF64) : kErfSmallF32));
    V ac = clamp(a, 1, top);
    V erfc = f64_grade ? erfc_f64(ac)
                       : mul(exp(b.CreateFNeg(mul(ac, ac))), poly(sub(ac, c(2.5)), kErfcF32));
    V r = sel(lt(a, c(1)), small, sub(c(1), erfc));
    r = sel(b.CreateFCmpOGE(a, c(top)), c(1), r);
    return copysign(r, x);
  }

  llvm::IRBuilder<>& b;
  llvm::Type* type;  // the scalar or vector type computed in
  llvm::Type* i64;   // the integer type of its width
  Grade grade;
  // llvm.fmuladd fuses where the target has fast FMA; llvm.fma always (a libm call without it).
  llvm::Intrinsic::ID multiply_add = llvm::Intrinsic::fmuladd;

 private:
  // erfc(a) for a in [1, 6]: the interval's coefficients are selected per lane (one
  // polynomial evaluation, no branches); e^(-a^2) with a^2 split exactly (Veltkamp), since
  // its rounding error times a^2 would cost up to 36 ULP.
  V erfc_f64(V a) {
    V in_first = lt(a, c(2));
    V in_second = lt(a, c(3.5));
    auto pick = [&](const double(&v)[3]) {
      return sel(in_first, c(v[0]), sel(in_second, c(v[1]), c(v[2])));
    };
    V t = sub(a, pick(kErfcF64Mid));
    V g = nullptr;
    for (int i = 15; i >= 0; --i) {
      V coef = pick({kErfcF64[0][i], kErfcF64[1][i], kErfcF64[2][i]});
      g = g ? fma(g, t, coef) : coef;
    }
    V hi = from_bits(b.CreateAnd(bits(a), ci(~((std::int64_t{1} << 27) - 1))));
    V lo = sub(a, hi);
    V s = mul(lo, add(add(hi, hi), lo));  // a^2 - hi^2, small: e^-s = 1 - s + s^2/2
    V e = mul(exp(b.CreateFNeg(mul(hi, hi))), fma(s, fma(s, c(0.5), c(-1)), c(1)));
    return mul(e, g);
  }
};

std::string type_suffix(llvm::Type* t) {
  std::string scalar = t->getScalarType()->isFloatTy() ? "f32" : "f64";
  if (auto* vt = llvm::dyn_cast<llvm::FixedVectorType>(t))
    return "v" + std::to_string(vt->getNumElements()) + scalar;
  return scalar;
}

// Calls (defining on first use in the module) "edifice.math.NAME.TYPE", an internal
// always-inline function computing `body` in f64 (widening f32 arguments).
V call(llvm::IRBuilder<>& b, const char* name, V x, const std::function<V(Code&, V)>& body) {
  llvm::Type* type = x->getType();
  llvm::Type* scalar = type->getScalarType();
  if (!scalar->isFloatTy() && !scalar->isDoubleTy())
    fail("jit: internal error: vector math on a non-float type");
  llvm::Module* module = b.GetInsertBlock()->getModule();
  std::string fname = std::string("edifice.math.") + name + "." + type_suffix(type);
  llvm::Function* f = module->getFunction(fname);
  if (!f) {
    f = llvm::Function::Create(llvm::FunctionType::get(type, {type}, false),
                               llvm::Function::InternalLinkage, fname, module);
    f->addFnAttr(llvm::Attribute::AlwaysInline);
    f->addFnAttr(llvm::Attribute::NoUnwind);
    f->addFnAttr(llvm::Attribute::WillReturn);
    f->addFnAttr(llvm::Attribute::Speculatable);
    f->setDoesNotAccessMemory();
    llvm::IRBuilder<> fb(llvm::BasicBlock::Create(module->getContext(), "entry", f));
    const bool is_f32 = scalar->isFloatTy();
    llvm::Type* f64 = llvm::Type::getDoubleTy(module->getContext());
    if (auto* vt = llvm::dyn_cast<llvm::VectorType>(type)) f64 = llvm::VectorType::get(f64, vt);
    V arg = f->getArg(0);
    Code code(fb, f64, is_f32 ? Grade::f32_in_f64 : Grade::f64);
    V result = body(code, is_f32 ? fb.CreateFPExt(arg, f64) : arg);
    fb.CreateRet(is_f32 ? fb.CreateFPTrunc(result, type) : result);
  }
  return b.CreateCall(f, {x});
}

}  // namespace

llvm::Value* exp(llvm::IRBuilder<>& b, llvm::Value* x) {
  return call(b, "exp", x, [](Code& c, V v) { return c.exp(v); });
}
llvm::Value* log(llvm::IRBuilder<>& b, llvm::Value* x) {
  return call(b, "log", x, [](Code& c, V v) { return c.log(v); });
}
llvm::Value* tanh(llvm::IRBuilder<>& b, llvm::Value* x) {
  return call(b, "tanh", x, [](Code& c, V v) { return c.tanh(v); });
}
llvm::Value* erf(llvm::IRBuilder<>& b, llvm::Value* x) {
  return call(b, "erf", x, [](Code& c, V v) { return c.erf(v); });
}

// k = round(x log2 e) by the 1.5 * 2^23 shifter, r = x - k ln2 in two steps (Cody-Waite, the
// high part of ln2 short enough for k ln2_hi to be exact), e^r = 1 + r + r^2 P(r) with the f32
// fit kExpF32, then 2^(k-1) * 2 built in the exponent field (k - 1 stays a normal exponent over
// the whole range). Every f32 input of the range was compared with exp in f64: at most 0.99 ULP.
llvm::Value* exp_f32_bounded(llvm::IRBuilder<>& b, llvm::Value* x) {
  if (!x->getType()->getScalarType()->isFloatTy())
    fail("jit: internal error: exp_f32_bounded on a non-float type");
  Code m(b, x->getType(), Grade::f32);
  constexpr double kShifterF32 = 0x1.8p23;
  V top = m.c(88.72);
  V over = b.CreateFCmpOGT(x, top);
  x = m.sel(over, top, x);
  V t = m.fma(x, m.c(0x1.715476p+0), m.c(kShifterF32));
  V kf = m.sub(t, m.c(kShifterF32));
  V r = m.fma(kf, m.c(-0.693359375), x);
  r = m.fma(kf, m.c(2.12194440e-4), r);
  V q = m.fma(m.mul(r, r), m.poly(r, kExpF32), r);
  V k = b.CreateSub(m.bits(t), m.bits(m.c(kShifterF32)));
  V half_scale = m.from_bits(b.CreateShl(b.CreateAdd(k, m.ci(126)), 23));
  V y = m.mul(m.mul(m.add(m.c(1), q), half_scale), m.c(2));
  return m.sel(over, m.c(std::numeric_limits<double>::infinity()), y);
}

// erf for f32 in f32 arithmetic, for targets with fused multiply-add (the x^2 split below
// needs it exact). |x| < 1: x + x R(x^2) with R = erf(x)/x - 1, one rounding at the end (the
// form keeps R's rounding errors small against the result). Above: 1 - e^(-x^2) G(x) as one
// multiply-add, with G = erfc(x) e^(x^2),
// e^(-hi) from exp_f32_bounded and x^2 = hi + lo split exactly (e^(-lo) = 1 - lo). 1 from 4 on.
// Every f32 input was compared with erf in f64 (vector_math_bench accuracy-exhaustive).
llvm::Value* erf_f32(llvm::IRBuilder<>& b, llvm::Value* x) {
  if (!x->getType()->getScalarType()->isFloatTy())
    fail("jit: internal error: erf_f32 on a non-float type");
  // Every operation rounded as written: a contraction (x^2 - 0.5 into one multiply-add) would
  // count x^2's rounding error twice, and only where the optimiser chose to contract.
  llvm::IRBuilderBase::FastMathFlagGuard keep_flags(b);
  b.setFastMathFlags(llvm::FastMathFlags());
  Code m(b, x->getType(), Grade::f32);
  m.multiply_add = llvm::Intrinsic::fma;  // the x^2 splits below must fuse
  V a = m.fabs(x);
  // R in t = x^2 - 0.5: the terms after the first stay small, and so do their rounding errors;
  // x^2's own rounding error (up to 0.3 ULP of the result near 1) is added back.
  V w = m.mul(a, a);
  V t = m.add(m.sub(w, m.c(0.5)), m.fma(a, a, b.CreateFNeg(w)));
  V small = m.fma(a, m.poly(t, kErfSmallF32Arith), a);
  V ac = m.clamp(a, 1, 4);
  V hi = m.mul(ac, ac);
  V lo = m.fma(ac, ac, b.CreateFNeg(hi));
  V e = exp_f32_bounded(b, b.CreateFNeg(hi));
  V g = m.poly(m.sub(ac, m.c(2.5)), kErfcF32Arith);
  V large = m.fma(b.CreateFNeg(e), m.fma(b.CreateFNeg(g), lo, g), m.c(1));
  V r = m.sel(m.lt(a, m.c(1)), small, large);
  r = m.sel(b.CreateFCmpOGE(a, m.c(4)), m.c(1), r);
  return m.copysign(r, x);
}

}  // namespace edifice::jit::codegen::vector_math
