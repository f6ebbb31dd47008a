"""The wall material: modified Mooney-Rivlin (kPa) with a volumetric penalty, and its von Mises
stress; F is a plane-strain deformation gradient flattened as (F11, F12, F21, F22)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MooneyRivlin"]

# F is flattened as (F11, F12, F21, F22). cof F = J F^-T = (F22, -F21, -F12, F11) = _COF @ F.
_COF = np.array([[0, 0, 0, 1], [0, 0, -1, 0], [0, -1, 0, 0], [1, 0, 0, 0]], dtype=float)
_IDENTITY = np.array([1.0, 0.0, 0.0, 1.0])


@dataclass(frozen=True)
class MooneyRivlin:
    """The modified Mooney-Rivlin material of the paper (kPa), with bulk modulus ``bulk_ratio * mu``."""

    c1: float = 0.138
    d1: float = 3.833
    d2: float = 18.803
    bulk_ratio: float = 1000.0

    @property
    def shear_modulus(self) -> float:
        """Initial (small-strain) shear modulus ``mu = 2 (c1 + D1 D2)`` in kPa."""
        return 2.0 * (self.c1 + self.d1 * self.d2)

    @property
    def bulk_modulus(self) -> float:
        """``kappa`` in kPa."""
        return self.bulk_ratio * self.shear_modulus

    def isochoric(self, f: np.ndarray, tangent: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """First Piola stress ``dW_iso/dF`` ``[..., 4]`` and its tangent ``[..., 4, 4]`` at F ``[..., 4]``."""
        cof = f @ _COF
        j = f[..., 0] * f[..., 3] - f[..., 1] * f[..., 2]
        i1 = (f * f).sum(-1) + 1.0
        j23 = j ** (-2.0 / 3.0)
        growth = self.d1 * self.d2 * np.exp(self.d2 * (i1 * j23 - 3.0))
        dpsi = self.c1 + growth
        a = (2.0 * j23)[..., None]
        b = (2.0 / 3.0 * i1 * j23 / j)[..., None]
        g = a * f - b * cof  # d(I1b)/dF
        stress = dpsi[..., None] * g
        if not tangent:
            return stress, None
        dg = (  # d2(I1b)/dF2
            a[..., None] * np.eye(4)
            - (4.0 / 3.0 * j23 / j)[..., None, None] * (_outer(f, cof) + _outer(cof, f))
            + (10.0 / 9.0 * i1 * j23 / j**2)[..., None, None] * _outer(cof, cof)
            - b[..., None] * _COF
        )
        moduli = (self.d2 * growth)[..., None, None] * _outer(g, g) + dpsi[..., None, None] * dg
        return stress, moduli

    def von_mises(self, f: np.ndarray) -> np.ndarray:
        """Von Mises stress of the 3-D Cauchy stress at plane-strain F ``[..., 4]`` (kPa)."""
        j = f[..., 0] * f[..., 3] - f[..., 1] * f[..., 2]
        i1 = (f * f).sum(-1) + 1.0
        j23 = j ** (-2.0 / 3.0)
        dpsi = self.c1 + self.d1 * self.d2 * np.exp(self.d2 * (i1 * j23 - 3.0))
        # Deviatoric Cauchy stress 2 psi' J^(-5/3) (b - I1/3), b = F F^T with b33 = 1.
        b11 = f[..., 0] ** 2 + f[..., 1] ** 2
        b22 = f[..., 2] ** 2 + f[..., 3] ** 2
        b12 = f[..., 0] * f[..., 2] + f[..., 1] * f[..., 3]
        scale = 2.0 * dpsi * j23 / j
        return scale * _von_mises_of_deviator(b11 - i1 / 3, b22 - i1 / 3, 1 - i1 / 3, b12)

    def linear_von_mises(self, grad_u: np.ndarray) -> np.ndarray:
        """Small-strain von Mises stress ``2 mu |dev eps|_vM`` at displacement gradients ``[..., 4]``."""
        e11, e22 = grad_u[..., 0], grad_u[..., 3]
        e12 = 0.5 * (grad_u[..., 1] + grad_u[..., 2])
        trace = e11 + e22
        return 2.0 * self.shear_modulus * _von_mises_of_deviator(e11 - trace / 3, e22 - trace / 3, -trace / 3, e12)


def _outer(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Batched outer product ``x_i y_j`` over the last axis."""
    return x[..., :, None] * y[..., None, :]


def _von_mises_of_deviator(s11: np.ndarray, s22: np.ndarray, s33: np.ndarray, s12: np.ndarray) -> np.ndarray:
    return np.sqrt(1.5 * (s11**2 + s22**2 + s33**2 + 2.0 * s12**2))
