"""lcdash: explore variable-star light curves with Astromer-style representations.

The library holds everything; the Streamlit pages and the CLI are thin layers over it.
No module here imports Streamlit.
"""

__version__ = "0.1.0"
