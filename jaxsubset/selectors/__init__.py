"""Selectors: pure functions ``(arrays, budget, ...) -> Subset``, and the method registry.

This module only re-exports; the registrations live in :mod:`jaxsubset.selectors.registry`."""

from jaxsubset.selectors.basic import random, top_k
from jaxsubset.selectors.ccs import ccs
from jaxsubset.selectors.d2 import d2
from jaxsubset.selectors.moderate import moderate
from jaxsubset.selectors.noise_filter import filter_random
from jaxsubset.selectors.uncertainty import uncertainty
from jaxsubset.selectors.coverage import herding, kcenter_greedy
from jaxsubset.selectors.craig import craig
from jaxsubset.selectors.facility import facility_location
from jaxsubset.selectors.knn_facility import knn_facility_location
from jaxsubset.selectors.partitioned import coverage_value, partitioned_facility_location
from jaxsubset.selectors.geda import available_solvers as geda_solvers
from jaxsubset.selectors.geda import geda, geda_smoothed, online_geda
from jaxsubset.selectors.glister import glister
from jaxsubset.selectors.kmeanspp import kmeanspp
from jaxsubset.selectors.gradmatch import gradmatch, gradmatch_batches
from jaxsubset.selectors.per_class import per_class
from jaxsubset.selectors.ranking import evenly_spaced, quantile_random
from jaxsubset.selectors.registry import METHODS, Method, get, register, select
from jaxsubset.selectors.smi import (FLQMI, FLVMI, GCMI, FacilityLocation, LogDet, LogDetMI, smi, smi_objective,
                                     smi_similarity)
from jaxsubset.selectors.weights import match_weights

__all__ = ["filter_random", "knn_facility_location", "partitioned_facility_location", "coverage_value", "uncertainty", "ccs", "moderate", "d2", "geda_smoothed", "herding", "kcenter_greedy", "craig", "facility_location", "glister", "kmeanspp", "gradmatch", "gradmatch_batches",
           "random", "top_k", "per_class", "evenly_spaced", "quantile_random", "geda", "geda_solvers",
           "online_geda", "match_weights", "smi", "smi_objective", "smi_similarity", "FLVMI", "FLQMI", "GCMI",
           "LogDetMI", "FacilityLocation", "LogDet", "METHODS", "Method", "get", "register", "select"]
