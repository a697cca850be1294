"""Selectors: pure functions ``(arrays, budget, ...) -> Subset``, and the method registry."""

from jaxsubset.selectors.basic import random, top_k
from jaxsubset.selectors.ccs import ccs
from jaxsubset.selectors.d2 import d2
from jaxsubset.selectors.moderate import moderate
from jaxsubset.selectors.uncertainty import uncertainty
from jaxsubset.selectors.coverage import herding, herding_last_layer, kcenter_greedy, kcenter_last_layer
from jaxsubset.selectors.craig import craig, craig_last_layer
from jaxsubset.selectors.facility import facility_location
from jaxsubset.selectors.knn_facility import knn_facility_location
from jaxsubset.selectors.partitioned import coverage_value, partitioned_facility_location
from jaxsubset.selectors.geda import available_solvers as geda_solvers
from jaxsubset.selectors.geda import geda, geda_smoothed, online_geda
from jaxsubset.selectors.glister import glister
from jaxsubset.selectors.gradmatch import gradmatch, gradmatch_batches, gradmatch_batches_last_layer, gradmatch_last_layer
from jaxsubset.selectors.per_class import per_class
from jaxsubset.selectors.ranking import evenly_spaced, quantile_random
from jaxsubset.selectors.registry import METHODS, Method, get, register, select
from jaxsubset.selectors.smi import (FLQMI, FLVMI, GCMI, FacilityLocation, LogDet, LogDetMI, smi, smi_objective,
                                     smi_similarity)
from jaxsubset.selectors.weights import match_weights

register("random", random, description="uniform random (per class)")
register("loss_hard", top_k, needs=("loss",), description="highest loss of a surrogate model", largest=True)
register("loss_easy", top_k, needs=("loss",), description="lowest loss of a surrogate model", largest=False)
register("el2n_hard", top_k, needs=("el2n",), description="highest EL2N score (Paul et al. 2021)", largest=True)
register("el2n_easy", top_k, needs=("el2n",), description="lowest EL2N score", largest=False)
register("grand_hard", top_k, needs=("grad_norm",), description="largest gradient norm (GraNd)", largest=True)
register("grand_easy", top_k, needs=("grad_norm",), description="smallest gradient norm", largest=False)
register("input_grad_hard", top_k, needs=("input_grad_norm",), description="largest input-gradient norm",
         largest=True)
register("input_grad_easy", top_k, needs=("input_grad_norm",), description="smallest input-gradient norm",
         largest=False)
register("evenly_spaced", evenly_spaced, needs=("grad_norm",),
         description="evenly spaced ranks of the gradient norm (GEDA study)")
register("quantile_random", quantile_random, needs=("grad_norm",),
         description="random within gradient-norm quartiles (GEDA study)")
register("geda", geda, needs=("grad_norm",),
         description="gradient-norm ECDF matching: MILP (binned, N=5 trapezoid) solved by OR-Tools CP-SAT")
register("geda_random", geda, needs=("grad_norm",), rule="random",
         description="GEDA (N=5 trapezoid) with a seeded stratified random draw inside each bin")
register("geda_solver", geda, needs=("grad_norm",), rule="solver",
         description="GEDA (N=5 trapezoid) taking the last rows of each bin in data order, as the study's MILP solver did")
register("geda_w1", geda, needs=("grad_norm",),
         description="GEDA with the exact 1-Wasserstein objective (closed-form optimum)", num_nodes=None)
register("online_geda", online_geda, needs=("grad_norm", "grads"),
         description="GEDA subset weighted by regularized gradient matching (GEDA study, Alg. 6.1)")
LAST_LAYER = ("last_layer_e", "last_layer_h")  # closed-form factors of the head's per-sample gradients
register("craig", craig_last_layer, needs=LAST_LAYER,
         description="CRAIG: facility location on last-layer gradients, cluster-size weights (Mirzasoleiman 2020)")
register("gradmatch", gradmatch_last_layer, needs=LAST_LAYER,
         description="GRAD-MATCH: OMP with non-negative weights matching the mean last-layer gradient")
register("gradmatch_pb", gradmatch_batches_last_layer, needs=LAST_LAYER,
         description="per-batch GRAD-MATCH (CORDS's GRAD-MATCH-PB): OMP over mini-batches of 32 on last-layer gradients")
register("glister", glister, needs=LAST_LAYER, per_class=False, validation=True,
         description="GLISTER: greedy one-step lookahead on a validation loss, last-layer Taylor (Killamsetty "
                     "2021); needs a validation set")
register("herding", herding_last_layer, needs=LAST_LAYER, description="herding on last-layer gradients")
register("kcenter", kcenter_last_layer, needs=LAST_LAYER, description="greedy k-center on last-layer gradients")
register("craig_grads", craig, needs=("grads",),
         description="CRAIG on the 'grads' features (adaptive: last-layer, full or projected gradients)")
register("craig_stochastic", craig, needs=("grads",), description="CRAIG with stochastic greedy",
         optimizer="stochastic")
register("gradmatch_grads", gradmatch, needs=("grads",), description="GRAD-MATCH on the 'grads' features")
register("learned", top_k, needs=("learned_value",), largest=True,
         description="learned values through a differentiable facility-location LP layer (Das et al. 2021)")
# uncertainty (DeepCore) from one surrogate's softmax; coverage-aware selection (CCS, Moderate, D2)
for _kind in ("least_confidence", "entropy", "margin"):
    register(f"uncertainty_{_kind}", uncertainty, needs=("probs",), kind=_kind,
             description=f"most uncertain by {_kind.replace('_', ' ')} of a surrogate's softmax (DeepCore)")
register("ccs", ccs, needs=("aum",), hard="low",
         description="CCS on AUM: drop the hardest beta, stratified sampling, sparsest strata first (Zheng 2023)")
register("ccs_el2n", ccs, needs=("el2n",), hard="high", description="CCS on the EL2N score")
register("ccs_forgetting", ccs, needs=("forgetting",), hard="high", description="CCS on forgetting counts")
register("moderate", moderate, needs=("embedding",),
         description="Moderate coreset: embedding distance to the class centre closest to the median (Xia 2023)")
register("d2", d2, needs=("embedding", "forgetting"), k=5, beta=None,
         description="D2 pruning: forgetting scores passed over a kNN graph of embeddings (Maharana 2024)")
register("d2_el2n", d2, needs=("embedding", "el2n"), k=5, beta=None, description="D2 pruning on the EL2N score")
register("knn_shapley", top_k, needs=("knn_shapley",), largest=True,
         description="highest KNN-Shapley values on surrogate embeddings (Jia et al. 2019)")

__all__ = ["knn_facility_location", "partitioned_facility_location", "coverage_value", "uncertainty", "ccs", "moderate", "d2", "geda_smoothed", "herding", "kcenter_greedy", "craig", "facility_location", "glister", "gradmatch", "gradmatch_batches",
           "random", "top_k", "per_class", "evenly_spaced", "quantile_random", "geda", "geda_solvers",
           "online_geda", "match_weights", "smi", "smi_objective", "smi_similarity", "FLVMI", "FLQMI", "GCMI",
           "LogDetMI", "FacilityLocation", "LogDet", "METHODS", "Method", "get", "register", "select"]
