"""The studio's Streamlit app as installed by `pip install .`: app.py, pages/ and studio/.

In a checkout these are symbolic links to the top-level app.py, pages/ and studio/ (which
`streamlit run app.py` uses); the wheel ships them as files under this one top-level name, so
installing the studio adds no generic top-level modules called `app`, `pages` or `studio`.
`dissect studio` finds the app with `dissect.commands.studio.app_path()`.
"""
