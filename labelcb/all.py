"Every public name of labelcb: `from labelcb.all import *`"
from .losses import *
from .items import *
from .table import *
from .plc import *
from .kfold import *
from .softlabel import *
from .audit import *
from .noise import *
from .data import *
from .demo import *
from .partial import *
from .temporal import *
from .sinkhorn import *
from .selflabel import *
from .refinery import *
