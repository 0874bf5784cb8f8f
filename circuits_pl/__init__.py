"""circuits_pl: which exact circuit does a tiny bias-free ReLU MLP learn? A PyTorch Lightning study."""

from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule
from circuits_pl.network import ReLUMLP
from circuits_pl.tasks import Circuit, Task, get_task, register, task_names

__all__ = ["Circuit", "CircuitDataModule", "CircuitModule", "ReLUMLP", "Task", "get_task", "register", "task_names"]
__version__ = "0.1.0"
