"""python run_attack.py FIXTURE... : the end-to-end prototype (proto.attack) on fixtures."""
import numpy as np, sys, os
from proto import attack, rel_errors
tl=float(os.environ.get("TL","60"))
for f in sys.argv[1:]:
    d=np.load(f); b=len(d['X'])
    r=attack(d['gW'],d['gb'],b,weight=d['W'],bias=d['bias'],time_limit=tl)
    line=f"{f[9:]:26s} b={b} b_gap={r['b_gap']} attacked={r['b']} t={r['seconds']:.1f}s found={r['found']} certified={r['certified']}"
    if r['inputs'] is not None:
        e=rel_errors(r['inputs'],d['X']); ok=e[~np.isnan(e)]
        line+=f" | <1e-3: {np.sum(ok<1e-3)} <1e-2: {np.sum(ok<1e-2)} worst {ok.max():.1e} unrecovered {np.sum(np.isnan(e))} | pred_err max {r['predicted_err'].max():.1e}"
    print(line,flush=True)
