"""Training kept apart from sampling: the small shipped EDM models (``train`` extra for digits data)
and the distillation of AdaSDE solver coefficients."""

from .adasde import DistillConfig, DistillResult, distill_adasde, dpm2_teacher, student_levels, teacher_levels

__all__ = ["DistillConfig", "DistillResult", "distill_adasde", "dpm2_teacher", "student_levels", "teacher_levels"]
