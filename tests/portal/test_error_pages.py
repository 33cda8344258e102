"""Unknown URLs answer in the caller's language: JSON under /api/, a page elsewhere."""


def test_unknown_api_url_is_a_json_404(people, api_for):
    response = api_for("alice").get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}


def test_unknown_page_is_an_html_404(people, web_for):
    response = web_for("alice").get("/no-such-page/")
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert b"<nav" in response.content  # inside the portal's frame, with navigation
