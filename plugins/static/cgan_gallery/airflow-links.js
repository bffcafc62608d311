// The gallery's one script: links into Airflow's own UI (a[data-airflow]) from inside Airflow's iframe.
// Airflow 3.3 frames a plugin view with sandbox="allow-scripts allow-same-origin allow-forms
// allow-downloads": without allow-top-navigation a link cannot leave the frame, so it would open a
// second Airflow inside it. The frame is same-origin, so the link is handed to the Airflow UI's router
// in the top window instead (a history entry in its format, then the popstate its router listens to).
// Anywhere else (the page opened on its own, a modified click, any failure) the link works as a link.
document.addEventListener("click", function (event) {
  var link = event.target instanceof Element ? event.target.closest("a[data-airflow]") : null;
  if (!link || window.top === window || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey ||
      event.altKey) {
    return;
  }
  try {
    var top = window.top, state = top.history.state;
    var idx = state && typeof state.idx === "number" ? state.idx + 1 : 0;
    top.history.pushState({usr: null, key: Math.random().toString(36).slice(2, 10), idx: idx}, "", link.href);
    top.dispatchEvent(new PopStateEvent("popstate", {state: top.history.state}));
    event.preventDefault();
  } catch (e) {
    // not the same origin after all: the link navigates this frame
  }
});
