"""Training utilities that stay separate from sampling (distillation of solver coefficients)."""

from .adasde import DistillConfig, DistillResult, distill_adasde, dpm2_teacher, student_levels, teacher_levels

__all__ = ["DistillConfig", "DistillResult", "distill_adasde", "dpm2_teacher", "student_levels", "teacher_levels"]
