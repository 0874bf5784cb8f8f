import time, torch, numpy as np
torch.set_num_threads(1)
from circuits_pl.data import mix_seed
B, IN, S = 1000, 2, 100
def t(f, n=20):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    return sorted(ts)[len(ts)//2]/S*1e6
g = torch.Generator()
def cur():
    x = torch.empty(S, B, IN)
    for s in range(S):
        g.manual_seed(mix_seed(0,0,s)); x[s].uniform_(-1,1,generator=g)
print("per-step reseed", t(cur))
def chunk(C=S):
    x = torch.empty(S, B, IN)
    g.manual_seed(mix_seed(0,0,0)); x.uniform_(-1,1,generator=g)
print("one reseed per block", t(chunk))
def bare():
    x = torch.empty(S, B, IN)
    for s in range(S):
        g.manual_seed(12345); 
print("manual_seed only", t(bare))
def ms():
    for s in range(S): mix_seed(0,0,s)
print("mix_seed only", t(ms))
def unif():
    x = torch.empty(S, B, IN)
    for s in range(S): x[s].uniform_(-1,1,generator=g)
print("uniform_ only per step", t(unif))
# splitmix hash torch
M1, M2 = -4658895280553007687, -7723592293110705685  # 0xBF58476D1CE4E5B9, 0x94D049BB133111EB as signed
def sm():
    c = torch.arange(S*B*IN, dtype=torch.int64) + 12345
    h = c * -7046029254386353131
    h ^= (h >> 30) & ((1<<34)-1); h *= M1
    h ^= (h >> 27) & ((1<<37)-1); h *= M2
    h ^= (h >> 31) & ((1<<33)-1)
    x = ((h >> 40) & ((1<<24)-1)).to(torch.float32).mul_(2.0**-23).sub_(1.0)
print("splitmix int64 torch", t(sm))
try:
    g2 = torch.Generator(); g2.set_offset(5); print("set_offset ok")
except Exception as e: print("set_offset:", e)
from numpy.random import Generator, Philox
def ph():
    bg = Philox(key=123, counter=0); r = Generator(bg)
    x = torch.from_numpy(r.random((S,B,IN), dtype=np.float32)).mul_(2).sub_(1)
print("numpy philox block float32", t(ph))
def ph64():
    bg = Philox(key=123, counter=0); r = Generator(bg)
    x = torch.from_numpy(r.random((S,B,IN))).float()
print("numpy philox block float64", t(ph64))
from numpy.random import SFC64, PCG64
for name, BG in [("sfc64", SFC64), ("pcg64", PCG64)]:
    def f():
        r = Generator(BG(123))
        a = r.random((S,B,IN), dtype=np.float32); x = torch.from_numpy(a).mul_(2).sub_(1)
    print("numpy", name, "float32 block", t(f))
def ch32():
    x = torch.empty(S, B, IN); C=32
    for k in range(0, S+C, C):
        g.manual_seed(mix_seed(0,0,k)); c = torch.empty(C,B,IN).uniform_(-1,1,generator=g)
        n = min(C, S-k)
        if n>0: x[k:k+n] = c[:n]
print("torch chunk 32 + copy", t(ch32))
