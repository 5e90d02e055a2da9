"""DeepCraters: map and date lunar impact craters (R-FCN in Detectron2, a dual-channel
age network, and a PostGIS atlas).

detectron2 is deliberately not in ``install_requires`` (it is not on PyPI): as for every
Detectron2 plugin, install it first; ``make install`` does (tools/install_detectron2.py).
"""
from setuptools import find_packages, setup

setup(
    name="deepcraters",
    version="0.1.0",
    description="Lunar impact crater detection (R-FCN / Detectron2), age estimation and a PostGIS atlas",
    python_requires=">=3.11",
    packages=find_packages(include=["detectron2_rfcn*", "age_net*", "etl*", "atlas_db*"]),
    include_package_data=True,
    package_data={"atlas_db": ["alembic.ini", "migrations/*.py", "migrations/script.py.mako", "migrations/versions/*.py"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=1.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "pyarrow>=14",
        "rasterio>=1.3",
        "pyproj>=3.6",
        "pyogrio>=0.7",
        "shapely>=2.0",
        "psycopg2-binary>=2.9",
        "SQLAlchemy>=2.0",
        "GeoAlchemy2>=0.14",
        "alembic>=1.12",
        "pycocotools>=2.0.7",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "PyYAML>=6.0",
        "ray>=2.40",
        "pytest>=7.4",
    ],
    entry_points={"console_scripts": ["deepcraters = etl.cli:main"]},
)
