// similarity_test.cpp - the weighting and similarity settings of
// TrainOptions (core_similarity.*): a hand example with every setting, the
// 1.0 defaults unchanged, and the validation of the settings.  The agreement
// of train() and train_eigen() on random data for every setting is in
// eigen_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "core.hpp"
#include "core_topk.hpp"
#include "test_util.hpp"

using namespace recsys;
using recsys_test::model_nbrs;
using recsys_test::NaiveNeighbor;

namespace {

// The hand example: 4 users x 5 items (A..E = 1..5), w(u,i):
//
//          A  B  C  D  E      |I_u|
//   u1     2  1  .  .  .       2
//   u2     1  1  3  .  .       3
//   u3     .  2  1  1  .       3
//   u4     .  .  .  1  2       2
//   |U_i|  2  3  2  2  1      (N = 5 items)
//   sum w  3  4  4  2  2      (total 15, mean 3)
//   sum w2 5  6 10  2  4
//
// Dot products of the columns of w (the pairs with a common user):
//   AB = 2*1 + 1*1 = 3   AC = 1*3 = 3        BC = 1*3 + 2*1 = 5
//   BD = 2*1 = 2         CD = 1*1 = 1        DE = 1*2 = 2
// (AD, AE, BE, CE share no user).
constexpr int32_t A = 1, B = 2, C = 3, D = 4, E = 5;

std::vector<Triplet> hand_cells() {
    return {{1, A, 2}, {1, B, 1}, {2, A, 1}, {2, B, 1}, {2, C, 3},
            {3, B, 2}, {3, C, 1}, {3, D, 1}, {4, D, 1}, {4, E, 2}};
}

constexpr double kTol = 1e-15;  // relative: the expressions below are not bit-exact

void expect_nbrs(const Model& m, int32_t item, const std::vector<NaiveNeighbor>& want) {
    const auto got = model_nbrs(m, item);
    ASSERT_EQ(got.size(), want.size()) << "item " << item;
    for (std::size_t k = 0; k < want.size(); ++k) {
        EXPECT_EQ(got[k].id, want[k].id) << "item " << item << " rank " << k;
        EXPECT_NEAR(got[k].sim, want[k].sim, kTol * std::fabs(want[k].sim))
            << "item " << item << " rank " << k;
    }
}

TrainOptions with(Weighting w, Similarity s) {
    TrainOptions o;
    o.neighbors = 0;
    o.weighting = w;
    o.similarity = s;
    return o;
}

// Checks train() and train_eigen() against the same hand values.
template <class Check>
void both(const TrainOptions& o, Check check) {
    {
        SCOPED_TRACE("train");
        check(train(hand_cells(), o));
    }
    {
        SCOPED_TRACE("train_eigen");
        check(train_eigen(hand_cells(), o));
    }
}

double cosine(const std::vector<double>& a, const std::vector<double>& b, double h = 0) {
    double dot = 0, na = 0, nb = 0;
    for (std::size_t u = 0; u < a.size(); ++u) {
        dot += a[u] * b[u];
        na += a[u] * a[u];
        nb += b[u] * b[u];
    }
    return dot / (std::sqrt(na) * std::sqrt(nb) + h);
}

}  // namespace

TEST(Similarity, WeightsCosineIsTheDefault) {
    // cos = dot / (|i| |j|):
    //   AB 3/sqrt(5*6)  = 0.5477   AC 3/sqrt(5*10) = 0.4243   BC 5/sqrt(6*10) = 0.6455
    //   BD 2/sqrt(6*2)  = 0.5774   CD 1/sqrt(10*2) = 0.2236   DE 2/sqrt(2*4)  = 0.7071
    const double ab = 3 / std::sqrt(30.0), ac = 3 / std::sqrt(50.0), bc = 5 / std::sqrt(60.0),
                 bd = 2 / std::sqrt(12.0), cd = 1 / std::sqrt(20.0), de = 2 / std::sqrt(8.0);
    both(with(Weighting::weights, Similarity::cosine), [&](const Model& m) {
        expect_nbrs(m, A, {{B, ab}, {C, ac}});
        expect_nbrs(m, B, {{C, bc}, {D, bd}, {A, ab}});
        expect_nbrs(m, C, {{B, bc}, {A, ac}, {D, cd}});
        expect_nbrs(m, D, {{E, de}, {B, bd}, {C, cd}});
        expect_nbrs(m, E, {{D, de}});
    });
    // The defaults are exactly the 1.0 model: explicit settings change no bit.
    TrainOptions explicit_defaults;
    explicit_defaults.weighting = Weighting::weights;
    explicit_defaults.similarity = Similarity::cosine;
    explicit_defaults.shrink = 0;
    const Model a = train(hand_cells(), TrainOptions{});
    const Model b = train(hand_cells(), explicit_defaults);
    EXPECT_EQ(a.nbr_ids, b.nbr_ids);
    EXPECT_EQ(a.nbr_sims, b.nbr_sims);
    EXPECT_EQ(a.nbr_sims[2], 5.0 / (std::sqrt(6.0) * std::sqrt(10.0)));  // B's first: C
}

TEST(Similarity, Shrink) {
    // h = 2: dot / (|i| |j| + 2):
    //   AB 3/(sqrt30 + 2) = 0.4012   AC 3/(sqrt50 + 2) = 0.3307   BC 5/(sqrt60 + 2) = 0.5130
    //   BD 2/(sqrt12 + 2) = 0.3660   CD 1/(sqrt20 + 2) = 0.1545   DE 2/(sqrt8 + 2)  = 0.4142
    // The shrink favours pairs with more support: for D, E (0.7071 -> 0.4142)
    // stays first; for B the order is unchanged.
    TrainOptions o = with(Weighting::weights, Similarity::cosine);
    o.shrink = 2;
    const double ab = 3 / (std::sqrt(30.0) + 2), ac = 3 / (std::sqrt(50.0) + 2),
                 bc = 5 / (std::sqrt(60.0) + 2), bd = 2 / (std::sqrt(12.0) + 2),
                 cd = 1 / (std::sqrt(20.0) + 2), de = 2 / (std::sqrt(8.0) + 2);
    both(o, [&](const Model& m) {
        expect_nbrs(m, A, {{B, ab}, {C, ac}});
        expect_nbrs(m, B, {{C, bc}, {A, ab}, {D, bd}});  // A (0.4012) now before D (0.3660)
        expect_nbrs(m, C, {{B, bc}, {A, ac}, {D, cd}});
        expect_nbrs(m, D, {{E, de}, {B, bd}, {C, cd}});
        expect_nbrs(m, E, {{D, de}});
    });
}

TEST(Similarity, BinaryCosine) {
    // x = 1 on every cell: |x_i|^2 = |U_i| = 2, 3, 2, 2, 1; dots = common users:
    //   AB 2/sqrt(2*3) = 0.8165  AC 1/sqrt(2*2) = 0.5  BC 2/sqrt(3*2) = 0.8165
    //   BD 1/sqrt(3*2) = 0.4082  CD 1/sqrt(2*2) = 0.5  DE 1/sqrt(2*1) = 0.7071
    const double ab = 2 / std::sqrt(6.0), bd = 1 / std::sqrt(6.0), de = 1 / std::sqrt(2.0);
    both(with(Weighting::binary, Similarity::cosine), [&](const Model& m) {
        expect_nbrs(m, A, {{B, ab}, {C, 0.5}});
        expect_nbrs(m, B, {{A, ab}, {C, ab}, {D, bd}});  // exact tie A/C, by id
        expect_nbrs(m, C, {{B, ab}, {A, 0.5}, {D, 0.5}});
        expect_nbrs(m, D, {{E, de}, {C, 0.5}, {B, bd}});
        expect_nbrs(m, E, {{D, de}});
    });
    // Same as the 1.0 cosine of a log whose summed weights are all 1, bit for bit.
    std::vector<Triplet> ones = hand_cells();
    for (Triplet& t : ones) t.weight = 1;
    const Model plain = train(ones, TrainOptions{0});
    const Model bin = train(hand_cells(), with(Weighting::binary, Similarity::cosine));
    EXPECT_EQ(plain.nbr_ids, bin.nbr_ids);
    EXPECT_EQ(plain.nbr_sims, bin.nbr_sims);
}

TEST(Similarity, TfidfCosine) {
    // idf(u) = max(0, ln N - ln(1 + |I_u|)), N = 5:
    //   u1, u4 (2 items): p = ln(5/3) = 0.5108;  u2, u3 (3 items): q = ln(5/4) = 0.2231
    // x(u,i) = idf(u) on every cell (binary tf):
    //   A = (p,q,0,0)  B = (p,q,q,0)  C = (0,q,q,0)  D = (0,0,q,p)  E = (0,0,0,p)
    //   |A|^2 = p2+q2  |B|^2 = p2+2q2  |C|^2 = 2q2  |D|^2 = q2+p2  |E|^2 = p2
    //   AB = p2+q2, AC = q2, BC = 2q2, BD = q2, CD = q2, DE = p2
    //   cos AB = sqrt((p2+q2)/(p2+2q2)) = 0.9284   AC = q2/sqrt((p2+q2) 2q2) = 0.2831
    //       BC = 2q2/sqrt((p2+2q2) 2q2) = 0.5256   BD = q2/sqrt((p2+2q2)(q2+p2)) = 0.1488
    //       CD = q2/sqrt(2q2 (q2+p2)) = AC          DE = p2/sqrt((q2+p2) p2) = 0.9164
    // The heavy users u2, u3 count less than with binary (BD 0.4082 -> 0.1488).
    const double p = std::log(5.0 / 3), q = std::log(5.0 / 4), p2 = p * p, q2 = q * q;
    const double ab = std::sqrt((p2 + q2) / (p2 + 2 * q2)), ac = q2 / std::sqrt((p2 + q2) * 2 * q2),
                 bc = 2 * q2 / std::sqrt((p2 + 2 * q2) * 2 * q2),
                 bd = q2 / std::sqrt((p2 + 2 * q2) * (q2 + p2)), de = p2 / std::sqrt((q2 + p2) * p2);
    EXPECT_NEAR(ab, 0.92838, 1e-5);
    EXPECT_NEAR(bd, 0.14877, 1e-5);
    both(with(Weighting::tfidf, Similarity::cosine), [&](const Model& m) {
        expect_nbrs(m, A, {{B, ab}, {C, ac}});
        expect_nbrs(m, B, {{A, ab}, {C, bc}, {D, bd}});
        expect_nbrs(m, C, {{B, bc}, {A, ac}, {D, ac}});  // A and D tie exactly
        expect_nbrs(m, D, {{E, de}, {C, ac}, {B, bd}});
        expect_nbrs(m, E, {{D, de}});
    });
    // A user with N - 1 or more items gets idf 0 and drops out: with 2 items
    // (N = 2), every user has 1 or 2 items, idf = max(0, ln 2 - ln 2 or ln 3) = 0.
    const std::vector<Triplet> two = {{1, 7, 1}, {1, 8, 1}, {2, 7, 1}};
    EXPECT_EQ(train(two, with(Weighting::tfidf, Similarity::cosine)).pairs(), 0);
    EXPECT_EQ(train_eigen(two, with(Weighting::tfidf, Similarity::cosine)).pairs(), 0);
    EXPECT_EQ(train(two, with(Weighting::binary, Similarity::cosine)).pairs(), 2);
}

TEST(Similarity, Bm25Cosine) {
    // k1 = 1.2, b = 0.75 (defaults).  len_i = sum_u w(u,i) = 3 4 4 2 2, mean 3;
    // L_i = 0.25 + 0.75 len_i / 3 = 1, 1.25, 1.25, 0.75, 0.75;
    // k1 L_i = 1.2, 1.5, 1.5, 0.9, 0.9.  x = w 2.2 / (k1 L_i + w) * idf(u),
    // idf as in TfidfCosine (p for u1, u4; q for u2, u3):
    //   u1: A 4.4/3.2 p = 1.375 p   B 2.2/2.5 p = 0.88 p
    //   u2: A 2.2/2.2 q = q         B 2.2/2.5 q = 0.88 q   C 6.6/4.5 q
    //   u3: B 4.4/3.5 q             C 2.2/2.5 q = 0.88 q   D 2.2/1.9 q
    //   u4: D 2.2/1.9 p             E 4.4/2.9 p
    const double p = std::log(5.0 / 3), q = std::log(5.0 / 4);
    const std::vector<double> xa = {1.375 * p, q, 0, 0}, xb = {0.88 * p, 0.88 * q, 4.4 / 3.5 * q, 0},
                              xc = {0, 6.6 / 4.5 * q, 0.88 * q, 0},
                              xd = {0, 0, 2.2 / 1.9 * q, 2.2 / 1.9 * p}, xe = {0, 0, 0, 4.4 / 2.9 * p};
    const double ab = cosine(xa, xb), ac = cosine(xa, xc), bc = cosine(xb, xc),
                 bd = cosine(xb, xd), cd = cosine(xc, xd), de = cosine(xd, xe);
    both(with(Weighting::bm25, Similarity::cosine), [&](const Model& m) {
        expect_nbrs(m, A, {{B, ab}, {C, ac}});
        expect_nbrs(m, B, {{A, ab}, {C, bc}, {D, bd}});
        expect_nbrs(m, C, {{B, bc}, {A, ac}, {D, cd}});
        expect_nbrs(m, D, {{E, de}, {C, cd}, {B, bd}});
        expect_nbrs(m, E, {{D, de}});
    });
    // AB 0.8634  AC 0.2596  BC 0.5534  BD 0.1987  CD 0.2060  DE 0.9164
    EXPECT_NEAR(ab, 0.86337, 1e-5);
    // k1 = 0 turns bm25 into tfidf (x = w / w * idf); b = 0 drops the length norm.
    TrainOptions k0 = with(Weighting::bm25, Similarity::cosine);
    k0.k1 = 0;
    const Model m0 = train(hand_cells(), k0);
    const Model tf = train(hand_cells(), with(Weighting::tfidf, Similarity::cosine));
    EXPECT_EQ(m0.nbr_ids, tf.nbr_ids);
    for (std::size_t k = 0; k < tf.nbr_sims.size(); ++k)
        EXPECT_NEAR(m0.nbr_sims[k], tf.nbr_sims[k], 1e-15);
    TrainOptions b0 = with(Weighting::bm25, Similarity::cosine);
    b0.k1 = 2;
    b0.b = 0;  // x = w 3 / (2 + w) idf: u1 A 6/4 p, B 3/3 p; ...
    const Model mb = train(hand_cells(), b0);
    const std::vector<double> ya = {1.5 * p, q, 0, 0}, yb = {p, q, 1.5 * q, 0};
    expect_nbrs(mb, A, {{B, cosine(ya, yb)}, {C, cosine(ya, {0, 9.0 / 5 * q, q, 0})}});
}

TEST(Similarity, AsymmetricCosine) {
    // alpha = 0.25: sim(i,j) = dot / (|i|^(2*0.25) |j|^(2*0.75)) = dot / (s_i^0.25 s_j^0.75),
    // s = |x|^2 = 5 6 10 2 4.  The list of i holds j: popular-ish (large s_j)
    // neighbours are penalised more than with cosine.
    //   A->B 3/(5^.25 6^.75) = 0.5233   B->A 3/(6^.25 5^.75) = 0.5733
    //   A->C 3/(5^.25 10^.75) = 0.3568  C->A 3/(10^.25 5^.75) = 0.5045
    //   B->C 5/(6^.25 10^.75) = 0.5681  C->B 5/(10^.25 6^.75) = 0.7334
    //   B->D 2/(6^.25 2^.75) = 0.7598   D->B 2/(2^.25 6^.75) = 0.4387
    //   C->D 1/(10^.25 2^.75) = 0.3344  D->C 1/(2^.25 10^.75) = 0.1495
    //   D->E 2/(2^.25 4^.75) = 0.5946   E->D 2/(4^.25 2^.75) = 0.8409
    auto s = [](double dot, double si, double sj) { return dot / (std::pow(si, 0.25) * std::pow(sj, 0.75)); };
    TrainOptions o = with(Weighting::weights, Similarity::asymmetric_cosine);
    o.alpha = 0.25;
    both(o, [&](const Model& m) {
        expect_nbrs(m, A, {{B, s(3, 5, 6)}, {C, s(3, 5, 10)}});
        expect_nbrs(m, B, {{D, s(2, 6, 2)}, {A, s(3, 6, 5)}, {C, s(5, 6, 10)}});
        expect_nbrs(m, C, {{B, s(5, 10, 6)}, {A, s(3, 10, 5)}, {D, s(1, 10, 2)}});
        expect_nbrs(m, D, {{E, s(2, 2, 4)}, {B, s(2, 2, 6)}, {C, s(1, 2, 10)}});
        expect_nbrs(m, E, {{D, s(2, 4, 2)}});
    });
    EXPECT_NEAR(s(2, 6, 2), 0.75984, 1e-5);
    // alpha = 0.5 is the cosine (up to pow(s, 0.5) vs sqrt(s) in the last bit),
    // and a shrink enters the denominator as for cosine.
    o.alpha = 0.5;
    o.shrink = 2;
    TrainOptions c = with(Weighting::weights, Similarity::cosine);
    c.shrink = 2;
    const Model ma = train(hand_cells(), o), mc = train(hand_cells(), c);
    EXPECT_EQ(ma.nbr_ids, mc.nbr_ids);
    for (std::size_t k = 0; k < mc.nbr_sims.size(); ++k)
        EXPECT_NEAR(ma.nbr_sims[k], mc.nbr_sims[k], 1e-15);
    // Default alpha is 0.5.
    const Model md = train(hand_cells(), with(Weighting::weights, Similarity::asymmetric_cosine));
    const Model mp = train(hand_cells(), TrainOptions{0});
    EXPECT_EQ(md.nbr_ids, mp.nbr_ids);
}

TEST(Similarity, Jaccard) {
    // |U_i & U_j| / (|U_i| + |U_j| - |U_i & U_j| + h) on the sets of users;
    // |U| = 2 3 2 2 1.  h = 0:
    //   AB 2/(2+3-2) = 2/3  AC 1/(2+2-1) = 1/3  BC 2/(3+2-2) = 2/3
    //   BD 1/(3+2-1) = 1/4  CD 1/(2+2-1) = 1/3  DE 1/(2+1-1) = 1/2
    // h = 1: AB 2/4, AC 1/4, BC 2/4, BD 1/5, CD 1/4, DE 1/3.
    for (Weighting w : {Weighting::weights, Weighting::binary}) {
        both(with(w, Similarity::jaccard), [&](const Model& m) {
            expect_nbrs(m, A, {{B, 2.0 / 3}, {C, 1.0 / 3}});
            expect_nbrs(m, B, {{A, 2.0 / 3}, {C, 2.0 / 3}, {D, 0.25}});
            expect_nbrs(m, C, {{B, 2.0 / 3}, {A, 1.0 / 3}, {D, 1.0 / 3}});
            expect_nbrs(m, D, {{E, 0.5}, {C, 1.0 / 3}, {B, 0.25}});
            expect_nbrs(m, E, {{D, 0.5}});
        });
    }
    TrainOptions o = with(Weighting::weights, Similarity::jaccard);
    o.shrink = 1;
    both(o, [&](const Model& m) {
        expect_nbrs(m, A, {{B, 0.5}, {C, 0.25}});
        expect_nbrs(m, B, {{A, 0.5}, {C, 0.5}, {D, 0.2}});
        expect_nbrs(m, D, {{E, 1.0 / 3}, {C, 0.25}, {B, 0.2}});
        expect_nbrs(m, E, {{D, 1.0 / 3}});
        EXPECT_EQ(model_nbrs(m, B)[2].sim, 0.2);  // integer arithmetic: exact
    });
}

TEST(Similarity, Rp3beta) {
    // alpha = 1, beta = 0.5, weights.  Row sums r_u = 3 5 4 3; column sums
    // c_i = 3 4 4 2 2.  P_iu = w/c_i, P_uj = w/r_u:
    //   P_iu: A u1 2/3, u2 1/3 | B u1 1/4, u2 1/4, u3 2/4 | C u2 3/4, u3 1/4 |
    //         D u3 1/2, u4 1/2 | E u4 1
    //   P_uj: u1 A 2/3, B 1/3 | u2 A 1/5, B 1/5, C 3/5 | u3 B 2/4, C 1/4, D 1/4 |
    //         u4 D 1/3, E 2/3
    // sim(i,j) = sum_u P_iu P_uj / |U_j|^0.5, |U| = 2 3 2 2 1:
    //   A->B (2/3 1/3 + 1/3 1/5)/sqrt3 = (13/45)/sqrt3 = 0.1668
    //   A->C (1/3 3/5)/sqrt2 = (1/5)/sqrt2 = 0.1414
    //   B->A (1/4 2/3 + 1/4 1/5)/sqrt2 = (13/60)/sqrt2 = 0.1532
    //   B->C (1/4 3/5 + 2/4 1/4)/sqrt2 = (11/40)/sqrt2 = 0.1945
    //   B->D (2/4 1/4)/sqrt2 = (1/8)/sqrt2 = 0.0884
    //   C->A (3/4 1/5)/sqrt2 = (3/20)/sqrt2 = 0.1061
    //   C->B (3/4 1/5 + 1/4 2/4)/sqrt3 = (11/40)/sqrt3 = 0.1588
    //   C->D (1/4 1/4)/sqrt2 = (1/16)/sqrt2 = 0.0442
    //   D->B (1/2 2/4)/sqrt3 = (1/4)/sqrt3 = 0.1443
    //   D->C (1/2 1/4)/sqrt2 = (1/8)/sqrt2 = 0.0884
    //   D->E (1/2 2/3)/1 = 1/3
    //   E->D (1 1/3)/sqrt2 = 0.2357
    const double r2 = std::sqrt(2.0), r3 = std::sqrt(3.0);
    TrainOptions o = with(Weighting::weights, Similarity::rp3beta);
    o.alpha = 1;
    o.beta = 0.5;
    both(o, [&](const Model& m) {
        expect_nbrs(m, A, {{B, 13.0 / 45 / r3}, {C, 0.2 / r2}});
        expect_nbrs(m, B, {{C, 11.0 / 40 / r2}, {A, 13.0 / 60 / r2}, {D, 0.125 / r2}});
        expect_nbrs(m, C, {{B, 11.0 / 40 / r3}, {A, 3.0 / 20 / r2}, {D, 1.0 / 16 / r2}});
        expect_nbrs(m, D, {{E, 1.0 / 3}, {B, 0.25 / r3}, {C, 0.125 / r2}});
        expect_nbrs(m, E, {{D, 1.0 / 3 / r2}});
    });
    // Defaults alpha = 1, beta = 0.5: the same model.
    const Model d = train(hand_cells(), with(Weighting::weights, Similarity::rp3beta));
    const Model e = train(hand_cells(), o);
    EXPECT_EQ(d.nbr_ids, e.nbr_ids);
    EXPECT_EQ(d.nbr_sims, e.nbr_sims);

    // alpha = 0.5, beta = 0, binary: P_iu = 1/|U_i|, P_uj = 1/|I_u| (|I_u| = 2 3 3 2),
    // both to the power 0.5:
    //   A->B = sqrt(1/2 1/2) [u1] + sqrt(1/2 1/3) [u2] = 1/2 + 1/sqrt6 = 0.9082
    //   A->C = sqrt(1/2 1/3) [u2] = 0.4082
    //   E->D = sqrt(1/1 1/2) [u4] = 0.7071
    TrainOptions h = with(Weighting::binary, Similarity::rp3beta);
    h.alpha = 0.5;
    h.beta = 0;
    both(h, [&](const Model& m) {
        expect_nbrs(m, A, {{B, 0.5 + 1 / std::sqrt(6.0)}, {C, 1 / std::sqrt(6.0)}});
        expect_nbrs(m, E, {{D, 1 / std::sqrt(2.0)}});
    });
}

TEST(Similarity, Rp3betaWithTfidfDropsZeroRows) {
    // tfidf makes u2, u3 weigh q, u1, u4 p; per-user row normalisation cancels
    // the user's factor in P_uj, per-item normalisation keeps it in P_iu.
    // With N = 2 every idf is 0: no transition at all, no neighbours, no NaN.
    const std::vector<Triplet> two = {{1, 7, 1}, {1, 8, 1}, {2, 7, 1}};
    EXPECT_EQ(train(two, with(Weighting::tfidf, Similarity::rp3beta)).pairs(), 0);
    EXPECT_EQ(train_eigen(two, with(Weighting::tfidf, Similarity::rp3beta)).pairs(), 0);
    // Hand example, alpha 1, beta 0: A->C = P_Au2 P_u2C, with
    // P_Au2 = q / (p + q) (A's column (p, q)), P_u2C = 1/3 (u2's row (q, q, q)).
    TrainOptions o = with(Weighting::tfidf, Similarity::rp3beta);
    o.beta = 0;
    const double p = std::log(5.0 / 3), q = std::log(5.0 / 4);
    both(o, [&](const Model& m) {
        const auto nb = model_nbrs(m, A);
        ASSERT_EQ(nb.size(), 2u);
        EXPECT_EQ(nb[1].id, C);
        EXPECT_NEAR(nb[1].sim, q / (p + q) / 3, 1e-15);
        // A->B = P_Au1 P_u1B + P_Au2 P_u2B = p/(p+q) 1/2 + q/(p+q) 1/3
        EXPECT_EQ(nb[0].id, B);
        EXPECT_NEAR(nb[0].sim, p / (p + q) / 2 + q / (p + q) / 3, 1e-15);
    });
}

TEST(Similarity, KeepsTopK) {
    // K applies after the final formula: rp3beta K = 1 keeps each item's best.
    TrainOptions o = with(Weighting::weights, Similarity::rp3beta);
    o.neighbors = 1;
    const Model m = train(hand_cells(), o);
    EXPECT_EQ(m.pairs(), 5);
    expect_nbrs(m, B, {{C, 11.0 / 40 / std::sqrt(2.0)}});
    expect_nbrs(m, D, {{E, 1.0 / 3}});
}

TEST(Similarity, SettingsValidation) {
    auto bad = [](TrainOptions o, const std::string& needle) {
        for (int eigen = 0; eigen < 2; ++eigen) {
            try {
                if (eigen)
                    train_eigen(hand_cells(), o);
                else
                    train(hand_cells(), o);
                ADD_FAILURE() << "expected InvalidInput containing " << needle;
            } catch (const InvalidInput& e) {
                EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
            }
        }
        EXPECT_THROW(resolve_settings(o), InvalidInput);
    };
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    TrainOptions o;
    o.shrink = -1;
    bad(o, "shrink must be finite and >= 0");
    o.shrink = nan;
    bad(o, "shrink");
    o.shrink = inf;
    bad(o, "shrink");
    o = TrainOptions{};
    o.alpha = 0.3;  // cosine does not read alpha
    bad(o, "alpha applies only to");
    o = TrainOptions{};
    o.beta = 0.3;
    bad(o, "beta applies only to similarity 'rp3beta'");
    o = TrainOptions{};
    o.k1 = 1;
    bad(o, "k1 applies only to weighting 'bm25'");
    o = TrainOptions{};
    o.b = 0.5;
    bad(o, "b applies only to weighting 'bm25'");
    o = with(Weighting::weights, Similarity::asymmetric_cosine);
    o.alpha = 1.5;
    bad(o, "alpha must be between 0 and 1");
    o.alpha = nan;
    bad(o, "alpha");
    o = with(Weighting::weights, Similarity::rp3beta);
    o.alpha = -0.1;
    bad(o, "alpha must be finite and >= 0");
    o.alpha = 1;
    o.beta = -1;
    bad(o, "beta must be finite and >= 0");
    o.beta = 0.5;
    o.shrink = 1;
    bad(o, "shrink does not apply to similarity 'rp3beta'");
    o = with(Weighting::bm25, Similarity::cosine);
    o.b = 1.01;
    bad(o, "b must be between 0 and 1");
    o.b = 0.5;
    o.k1 = -1;
    bad(o, "k1 must be finite and >= 0");
    bad(with(Weighting::tfidf, Similarity::jaccard), "weighting 'tfidf' does not apply");
    bad(with(Weighting::bm25, Similarity::jaccard), "weighting 'bm25' does not apply");
    o = TrainOptions{};
    o.neighbors = -1;
    bad(o, "neighbors must be >= 0");

    // Boundary values are accepted.
    o = with(Weighting::bm25, Similarity::asymmetric_cosine);
    o.k1 = 0;
    o.b = 1;
    o.alpha = 0;
    EXPECT_NO_THROW(train(hand_cells(), o));
    o.alpha = 1;
    o.b = 0;
    EXPECT_NO_THROW(train(hand_cells(), o));

    // Resolved values: defaults filled in, unread parameters NaN.
    const SimilaritySettings d = resolve_settings(TrainOptions{});
    EXPECT_TRUE(d.plain());
    EXPECT_EQ(d.neighbors, 50);
    EXPECT_EQ(d.shrink, 0);
    EXPECT_TRUE(std::isnan(d.alpha) && std::isnan(d.beta) && std::isnan(d.k1) && std::isnan(d.b));
    const SimilaritySettings r = resolve_settings(with(Weighting::bm25, Similarity::rp3beta));
    EXPECT_FALSE(r.plain());
    EXPECT_EQ(r.alpha, 1.0);
    EXPECT_EQ(r.beta, 0.5);
    EXPECT_EQ(r.k1, 1.2);
    EXPECT_EQ(r.b, 0.75);
    EXPECT_TRUE(std::isnan(r.shrink));
    EXPECT_EQ(resolve_settings(with(Weighting::weights, Similarity::asymmetric_cosine)).alpha, 0.5);
    TrainOptions s = TrainOptions{};
    s.shrink = 200;
    EXPECT_FALSE(resolve_settings(s).plain());
}

TEST(Similarity, Names) {
    for (Weighting w : {Weighting::weights, Weighting::binary, Weighting::tfidf, Weighting::bm25})
        EXPECT_EQ(parse_weighting(weighting_name(w)), w);
    for (Similarity s : {Similarity::cosine, Similarity::asymmetric_cosine, Similarity::rp3beta,
                         Similarity::jaccard})
        EXPECT_EQ(parse_similarity(similarity_name(s)), s);
    EXPECT_STREQ(weighting_name(Weighting::tfidf), "tfidf");
    EXPECT_STREQ(similarity_name(Similarity::asymmetric_cosine), "asymmetric_cosine");
    try {
        parse_weighting("TFIDF");
        FAIL();
    } catch (const InvalidInput& e) {
        EXPECT_NE(std::string(e.what()).find("accepted: weights, binary, tfidf, bm25"),
                  std::string::npos);
    }
    EXPECT_THROW(parse_similarity("pearson"), InvalidInput);
    EXPECT_THROW(parse_similarity(""), InvalidInput);
}

TEST(Similarity, OverflowIsRejected) {
    // Summed weights that overflow a per-user or per-item statistic are
    // InvalidInput, never inf/NaN similarities.
    const std::vector<Triplet> huge = {{1, 1, 1e200}, {1, 2, 1}, {2, 1, 1}};
    for (Similarity s : {Similarity::cosine, Similarity::asymmetric_cosine}) {
        TrainOptions o = with(Weighting::weights, s);
        o.shrink = 1;
        EXPECT_THROW(train(huge, o), InvalidInput);
        EXPECT_THROW(train_eigen(huge, o), InvalidInput);
    }
    const std::vector<Triplet> big = {{1, 1, 1e308}, {1, 2, 1e308}, {2, 1, 1}};
    EXPECT_THROW(train(big, with(Weighting::weights, Similarity::rp3beta)), InvalidInput);
    EXPECT_THROW(train_eigen(big, with(Weighting::weights, Similarity::rp3beta)), InvalidInput);
    EXPECT_THROW(train(big, with(Weighting::bm25, Similarity::cosine)), InvalidInput);
    EXPECT_THROW(train_eigen(big, with(Weighting::bm25, Similarity::cosine)), InvalidInput);
    // binary and jaccard do not read the weights' size.
    EXPECT_EQ(train(huge, with(Weighting::binary, Similarity::cosine)).pairs(), 2);
    EXPECT_EQ(train(huge, with(Weighting::weights, Similarity::jaccard)).pairs(), 2);
    EXPECT_EQ(train_eigen(huge, with(Weighting::binary, Similarity::cosine)).pairs(), 2);
}
