"""Dictionary features of a layer (PCA, NMF, TopK SAE), dissected exactly like units.

    from dissect.features import features_layer, Basis
    features_layer("runs/toy", "conv6", "sae", k=512)        # writes runs/toy/layers/conv6@sae512
    basis = Basis.load("runs/toy/layers/conv6@sae512")
    z = basis.encode(x)                                       # [N, C] -> [N, K]

Modules: basis (the dictionary and its encoder), fit (PCA, NMF, SAE; stability), layer (fit on
the run's cache, dissect through the engine, write the layer folder), summary (comparison
figures), ablate (editing codes inside a forward pass).
"""
from dissect.features.basis import Basis
from dissect.features.fit import fit_basis, match_cosines, sample_positions
from dissect.features.layer import feature_layer_name, features_layer, parse_feature_layer

__all__ = ["Basis", "fit_basis", "match_cosines", "sample_positions", "feature_layer_name",
           "features_layer", "parse_feature_layer"]
