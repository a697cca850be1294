import json, sys, time
sys.path.insert(0, "experiments")
import numpy as np
import mislabel as M
from jaxsubset import data
from jaxsubset.data.offline import stratified_split
from jaxsubset.valuation.learned import fit_selection_model
fm = data.load("fashion_mnist", data_dir="/usr/share/datasets/fashion-mnist")
pool, vi = stratified_split(fm.y_train, 2000 / fm.y_train.size, seed=0)
val = (fm.x_train[vi], fm.y_train[vi])
clean = fm.replace(x_train=fm.x_train[pool], y_train=fm.y_train[pool])
tk = dict(batch_size=256, lr=1e-3, optimizer="adam", schedule="cosine")
kw = {k: v for k, v in M.CONFIGS["fmnist"][5].items() if k != "dynamics"}
for noise, seed in ((0.1, 0), (0.1, 1)):
    ds, flipped = data.flip_labels(clean, noise, seed=seed)
    sur, dyn, _ = M.surrogate(ds, "mlp", seed, 2, tk, False)
    vals = []
    for s in range(4):
        t0 = time.perf_counter()
        r = fit_selection_model(sur, ds.x_train, ds.y_train, num_classes=10, seed=seed + 100 * s, validation=val, **kw)
        vals.append(r.values)
        z = [(v - v.mean()) / v.std() for v in vals]
        print(json.dumps(dict(noise=noise, seed=seed, members=s + 1, auc_last=M.auroc(-r.values, flipped),
                              auc_ens=M.auroc(-np.mean(z, 0), flipped), s=time.perf_counter() - t0)), flush=True)
