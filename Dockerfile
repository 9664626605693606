# leukoview on CPU: the Streamlit app by default, the scoring API as the alternative command.
#   docker build -t leukoview .
#   docker run -p 8501:8501 -v /path/to/data:/data:ro leukoview                                   # the app
#   docker run -p 8000:8000 -e LEUKOVIEW_API_TOKEN=... leukoview python -m leukoview serve --host 0.0.0.0  # the API
# Images are read only from the data root mounted at /data; decisions are kept in the /reviews volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    LEUKOVIEW_DATA_ROOT=/data LEUKOVIEW_REVIEW_DIR=/reviews LEUKOVIEW_CACHE_DIR=/tmp/leukoview-cache \
    LEUKOVIEW_MLFLOW=0
WORKDIR /app

# The pinned CPU build of torch (requirements.txt names torch==2.14.1 / torchvision==0.29.1) from PyTorch's CPU
# index, then everything else from requirements.txt (playwright and the test tools are not needed to run).
COPY requirements.txt .
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        $(grep -E '^(torch|torchvision)==' requirements.txt) \
 && grep -vE '^(torch|torchvision|playwright|pytest|ruff|httpx)==' requirements.txt > /tmp/req.txt \
 && pip install -r /tmp/req.txt

COPY leukoview ./leukoview
COPY pages ./pages
COPY models ./models
COPY sample_data ./sample_data
COPY .streamlit ./.streamlit
COPY Home.py pyproject.toml README.md ./

RUN useradd --create-home --uid 10001 leukoview && mkdir -p /data /reviews && chown leukoview /reviews
USER leukoview
VOLUME ["/reviews"]
EXPOSE 8501 8000
HEALTHCHECK CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=3)" \
 || python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=3)" || exit 1
CMD ["streamlit", "run", "Home.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
